"""Inference: serves each identifier's champion on POST /predict and hot-swaps on `model-selected`.

Which champions a replica serves, and how it keeps them in agreement with the registry (a complete
load before /readyz, event-driven swaps, periodic reconciliation), is champions.py. A swap replaces
one dict entry: requests in flight finish on the model they started with.

The request path: the body is parsed and checked on the event loop straight into numpy windows
(gaps filled as preprocessing fills them), concurrent requests share one forward pass through a
micro-batcher (bounded queue: 429 when full, 504 when a request waits too long), and the answer is
written with orjson. Each replica also keeps, per identifier, the most recent rows it knows (seeded
from the end of the lineage's processed data), so a body without rows forecasts from there.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import Counter, Gauge, Histogram, make_asgi_app
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from flts import auth
from flts.auth import Caller, Principal, require_identifier
from flts.batching import MicroBatcher, Overloaded, TimedOut
from flts.config import InferenceConfig, InferenceSettings, load_pipeline_config
from flts.observability import configure_logging, log_context
from flts.predict import Forecasts, RequestError, ServingModel, Window, iso_times
from flts.web import BodySizeLimit
from inference_container.champions import ChampionLoader, Champions
from inference_container.scoring import score_claims
from inference_container.streaming import stream_forecasts

log = logging.getLogger(__name__)

PREDICTIONS = Counter(
    "flts_predictions_total",
    "Forecast requests by outcome: ok, rejected (422), overloaded (429: queue full), timed_out (504), "
    "too_large (413: the body is over inference.max_request_bytes).",
    ["outcome"],
)
PREDICT_SECONDS = Histogram(
    "flts_predict_seconds",
    "Time to answer /predict.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
BATCH_REQUESTS = Histogram(
    "flts_predict_batch_requests",
    "Requests sharing one forward pass (micro-batch size).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_DEPTH = Gauge("flts_predict_queue_depth", "Requests waiting for the model.")

# A cell is a number, a string holding one, or null (a missing cell); checked while parsing into arrays, which
# names the row and column of a bad one, so validation here only publishes the schema (and costs nothing per cell).
Cell = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]})]


class PredictRequest(BaseModel):
    """One window (`rows`), a batch of windows (`windows`), the earlier system's `data` shape, or none of
    them: then the forecast starts from the most recent rows this replica knows for the identifier."""

    model_config = ConfigDict(extra="forbid")

    identifier: str | None = Field(None, description="Which series' champion to use; the global one when absent.")
    rows: list[dict[str, Cell]] | None = Field(
        None,
        description="One window: the most recent rows ({time column: ISO-8601, column: number or null}), "
        "oldest first, at least `rows_needed` of them (see /model-info). Null cells and missing steps are "
        "filled as in training and listed in `filled`.",
    )
    windows: list[list[dict[str, Cell]]] | None = Field(None, description="A batch of windows, scored in one pass.")
    data: dict[str, list[Cell]] | None = Field(None, description="Earlier clients: {column: [values...]}.")
    index_col: str | None = Field(None, description="With `data`: the time column's name.")
    inference_length: int | None = Field(None, ge=1, description="Steps to forecast; beyond output_seq_len, recursive.")

    @model_validator(mode="after")
    def _at_most_one_shape(self) -> PredictRequest:
        given = [name for name in ("rows", "windows", "data") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(
                f"send exactly one of rows, windows or data, or none for the latest known rows (got {given})"
            )
        if self.windows is not None and not self.windows:
            raise ValueError("windows is empty")
        return self


@dataclass(frozen=True)
class Job:
    """One request's work for the micro-batcher."""

    model: ServingModel
    windows: list[Window]
    length: int


def run_jobs(jobs: list[Job]) -> list[tuple[Forecasts, int] | RequestError]:
    """The micro-batch: one forecast call per (model, length) for all its requests' windows."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault((id(job.model), job.length), []).append(index)
    results: list[tuple[Forecasts, int] | RequestError] = [RequestError("not run")] * len(jobs)
    for indices in groups.values():
        model, length = jobs[indices[0]].model, jobs[indices[0]].length
        forecasts = model.forecast([w for i in indices for w in jobs[i].windows], length)
        start = 0
        for index in indices:
            count = len(jobs[index].windows)
            errors = [(n, e) for n, e in enumerate(forecasts.errors[start : start + count]) if e is not None]
            if errors:
                position, error = errors[0]
                results[index] = RequestError(f"window {position}: {error}" if count > 1 else error)
            else:
                results[index] = (forecasts, start)
            start += count
    return results


def create_app(
    settings: InferenceSettings,
    champions: Champions | None = None,
    follow_registry: bool = True,
    inference: InferenceConfig | None = None,
) -> FastAPI:
    champions = champions or Champions()
    limits = inference or load_pipeline_config(settings.pipeline_config).inference
    batcher: MicroBatcher[Job, tuple[Forecasts, int]] = MicroBatcher(
        run_jobs,
        max_batch=limits.micro_batch_requests,
        max_wait=limits.micro_batch_wait_ms / 1000,
        max_queue=limits.queue_max_requests,
        timeout=limits.request_timeout_seconds,
        name="predict-batcher",
        in_thread=limits.model_thread,
    )
    batcher.on_batch = BATCH_REQUESTS.observe
    QUEUE_DEPTH.set_function(lambda: batcher.depth)

    loader = ChampionLoader(settings, champions) if follow_registry else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        stop = threading.Event()
        if loader is not None:
            loader.start(stop)
            threading.Thread(
                target=score_claims, args=(settings, champions.get, stop), name="batch-scorer", daemon=True
            ).start()
            threading.Thread(
                target=stream_forecasts, args=(settings, champions, stop), name="stream-forecaster", daemon=True
            ).start()
        yield
        stop.set()
        await batcher.close()

    app = FastAPI(
        title="FLTS inference",
        version="0.1.0",
        description="Forecasts from each identifier's champion model.",
        lifespan=lifespan,
    )
    app.state.champions = champions
    app.state.loader = loader
    app.state.batcher = batcher
    app.mount("/metrics", make_asgi_app())
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_request_bytes, on_refused=PREDICTIONS.labels("too_large").inc
    )
    auth.install(app, settings)  # outermost: an anonymous body is refused before it is counted

    def champion_for(principal: Principal, identifier: str | None) -> ServingModel:
        """The identifier's champion, once the caller may use it (so a 404 tells nothing of other tenants)."""
        identifier = identifier or "global"
        require_identifier(principal, identifier)
        model = champions.get(identifier)
        if model is not None:
            return model
        if not champions.all():
            raise HTTPException(503, "no model loaded yet", headers={"Retry-After": "5"})
        raise HTTPException(404, f"no champion for identifier {identifier!r} (yet)")

    @app.get("/healthz", tags=["probes"])
    def healthz(response: Response) -> dict[str, str]:
        """Fails once the model-selected follower has died: only a restart brings it back."""
        if loader is not None and not loader.follower_alive():
            response.status_code = 503
            return {"status": "the model-selected follower is not running"}
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    def readyz(response: Response) -> dict[str, Any]:
        """Ready once every champion in the registry was loaded, with a follower hearing of new ones."""
        loaded = [m.identity.identifier for m in champions.all()]
        reason = loader.unready_reason() if loader is not None else None
        if reason is not None or not loaded:
            response.status_code = 503
            response.headers["Retry-After"] = "5"
            return {"status": reason or "no model loaded"}
        return {"status": "ready", "models": len(loaded)}  # a public probe: no identifiers

    def describe(model: ServingModel) -> dict[str, Any]:
        latest = champions.latest(model.identity.identifier)
        return {**model.describe(), "latest_row_ts": None if latest is None else iso_times(latest.nanoseconds[-1:])[0]}

    @app.get("/model-info", tags=["models"])
    def model_info(principal: Caller, identifier: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        return describe(champion_for(principal, identifier))

    @app.get("/models", tags=["models"])
    def models(principal: Caller) -> list[dict[str, Any]]:
        """The champions the caller may use (an admin: all of them)."""
        return [describe(m) for m in champions.all() if principal.may_use(m.identity.identifier)]

    def windows_of(body: PredictRequest, model: ServingModel) -> list[Window]:
        if body.windows is not None:
            if len(body.windows) > limits.max_batch_windows:
                raise RequestError(f"{len(body.windows)} windows sent; at most {limits.max_batch_windows} per request")
            return [model.window_from_rows(rows, position) for position, rows in enumerate(body.windows)]
        if body.rows is not None:
            return [model.window_from_rows(body.rows)]
        if body.data is not None:
            return [model.window_from_columns(body.data, body.index_col)]
        latest = champions.latest(model.identity.identifier)
        if latest is None:
            raise RequestError(
                f"no recent rows are known for {model.identity.identifier!r}: send them as rows, windows or data"
            )
        return [latest]

    def refuse(status: int, outcome: str, message: str, headers: dict[str, str] | None = None) -> HTTPException:
        PREDICTIONS.labels(outcome).inc()
        log.info("predict refused", extra={"status": status, "reason": message})
        return HTTPException(status, message, headers=headers)

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        principal = auth.authenticate(request)
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            PREDICTIONS.labels("rejected").inc()
            # A body that is not JSON comes back as its raw bytes: not echoed (nor encodable when not UTF-8).
            errors = [
                {key: value for key, value in error.items() if not (key == "input" and isinstance(value, bytes))}
                for error in exc.errors(include_url=False)
            ]
            raise RequestValidationError(errors) from None
        model = champion_for(principal, body.identifier)
        with log_context(request_id=request_id, identifier=model.identity.identifier):
            try:
                length = model.check_length(body.inference_length)
                windows = windows_of(body, model)
                for position, window in enumerate(windows):
                    model.check_horizon(window, length, f"window {position}: " if position else "")
                forecasts, start = await batcher.submit(Job(model, windows, length))
            except RequestError as exc:
                raise refuse(422, "rejected", str(exc)) from exc
            except Overloaded as exc:
                raise refuse(
                    429, "overloaded", f"the model is busy ({exc}); retry shortly", {"Retry-After": "1"}
                ) from exc
            except TimedOut as exc:
                raise refuse(504, "timed_out", f"the forecast took too long ({exc})") from exc
        records = [model.records(forecasts, start + i) for i in range(len(windows))]
        content: dict[str, Any] = {
            **model.identity.__dict__,
            "predictions": records[0],
            "last_row_ts": iso_times(windows[0].nanoseconds[-1:])[0],
            "filled": [
                {**({"window": position} if body.windows is not None else {}), **cell}
                for position, window in enumerate(windows)
                for cell in model.filled_cells(window)
            ],
        }
        if body.windows is not None:
            content["forecasts"] = records
        PREDICTIONS.labels("ok").inc()
        PREDICT_SECONDS.observe(time.perf_counter() - started)
        return Response(orjson.dumps(content), media_type="application/json", headers={"X-Request-ID": request_id})

    # The first route that matches answers: /predict is a plain Starlette route, so no dependency solving runs
    # per request (the body is parsed once, above); the FastAPI route of the same function documents it in OpenAPI.
    app.router.add_route("/predict", predict, methods=["POST"], include_in_schema=False)
    app.post(
        "/predict",
        tags=["predict"],
        dependencies=[Depends(auth.caller)],  # documents the key schemes; the plain route authenticates itself
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
        responses={
            401: {"description": "No valid API key."},
            403: {"description": "The key may not use this identifier."},
            404: {"description": "No champion for this identifier (yet)."},
            422: {"description": "The body cannot be served as sent; the message names the row, column or step."},
            429: {"description": "Too many requests waiting for the model; retry after Retry-After seconds."},
            504: {"description": "No forecast within the request timeout."},
        },
    )(predict)

    return app


def main() -> None:
    settings = InferenceSettings()
    configure_logging(settings.service_name, settings.log_level)
    import torch

    torch.set_num_threads(settings.torch_num_threads)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
