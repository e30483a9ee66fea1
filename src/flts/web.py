"""What the HTTP services share: how an app is assembled, the liveness probe, the request body limit, and a
JSON answer sent straight from ASGI middleware.

Each service follows the same shape: `<service>/api.py` holds its module-level router, `<service>/deps.py` the
dependencies every route module shares (the service object, read from `app.state`; the caller is
`flts.auth.Caller`), `<service>/models.py` the shapes of the answers, `<service>/service.py` builds
that object in `lifespan`, assembles the app with `service_app` and installs the body limit, then auth.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import Counter, make_asgi_app
from pydantic import BaseModel

Scope = dict[str, Any]
Message = dict[str, Any]

HTTP_RESPONSES = Counter(
    "flts_http_responses_total",
    "API responses by status code (the probes and /metrics are not counted; an error no handler answered is a 500).",
    ["code"],
)
# Paths whose answers are not API traffic: a 503 of an unready replica's /readyz is not a failed request.
NOT_COUNTED = ("/healthz", "/readyz", "/metrics")


probes = APIRouter(tags=["probes"])


class ProbeStatus(BaseModel):
    """A probe's answer: ok (ready), or why not."""

    status: str


@probes.get("/healthz")
def healthz(request: Request, response: Response) -> ProbeStatus:
    """Liveness: the process answers and nothing it needs died for good (readiness, /readyz, is each service's own)."""
    failure = request.app.state.liveness_failure()
    if failure is not None:
        response.status_code = 503
        return ProbeStatus(status=failure)
    return ProbeStatus(status="ok")


def service_app(
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    router: APIRouter,
    liveness_failure: Callable[[], str | None] | None = None,
) -> FastAPI:
    """A service's app: its lifespan and router, /healthz, and its Prometheus metrics on /metrics.

    `liveness_failure`: why the process must be restarted, if it must (a thread it cannot do without died).
    Every response is counted by status code (`CountResponses`), outside whatever middleware the service adds.
    """
    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=lifespan)
    app.state.liveness_failure = liveness_failure or (lambda: None)
    app.mount("/metrics", make_asgi_app())
    app.include_router(probes)
    app.include_router(router)
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: CountResponses(build())  # type: ignore[method-assign]
    return app


class CountResponses:
    """ASGI middleware around the whole app, its error handler included: each API response by status code
    (`flts_http_responses_total`), so the 413 of a body limit, the 401 of auth and the 500 of an unhandled error
    are counted too. A request that ends before any answer (the client left) is not counted."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].startswith(NOT_COUNTED):
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        except Exception:
            status = status or 500
            raise
        finally:
            if status is not None:
                HTTP_RESPONSES.labels(str(status)).inc()


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before it costs memory.

    A declared Content-Length over the limit is refused before a byte is read. A chunked (or lying) body
    is counted as it arrives and refused at the first chunk past the limit, so nothing beyond it is read
    or spooled; whatever the route would have answered to the cut-off body is replaced by the 413.
    With ``path``, only requests to that path are limited (a route with a smaller limit than the app's:
    install one of these for it beside the app-wide one).
    """

    def __init__(
        self, app: Any, max_bytes: int, on_refused: Callable[[], None] | None = None, path: str | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused
        self.path = path

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or (self.path is not None and scope["path"] != self.path):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"request body is {int(declared)} bytes; the limit is {self.max_bytes}")
            return
        received, exceeded, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the route's answer to a body cut short; the 413 below replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send, f"request body exceeds the limit of {self.max_bytes} bytes")

    async def _refuse(self, send: Callable, detail: str) -> None:
        if self.on_refused:
            self.on_refused()
        await send_json(send, 413, {"detail": detail}, {"connection": "close"})


async def send_json(send: Callable, status: int, content: Any, headers: dict[str, str] | None = None) -> None:
    """A whole JSON response from middleware, before (or instead of) the app."""
    body = json.dumps(content).encode()
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    plain = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*plain, *extra]})
    await send({"type": "http.response.body", "body": body})
