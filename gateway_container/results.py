"""What a tenant reads back through the gateway with its own key: a scored claim (`GET /score/{claim_id}`) and its
live forecasts (`GET /forecasts`). Both live where every tenant's results are (the `inference-logs` bucket, the
`forecasts` topic), so no tenant is given access there: the gateway reads them and answers a key only about the
identifiers it may use (401 without a key, 403 outside its identifiers, before anything is looked up).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import anyio
from anyio import to_thread
from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import Counter, Gauge
from starlette.types import Receive, Scope, Send

from flts.auth import Caller, Principal, require_identifier
from flts.layout import inference_log_uri, scoring_upload_key
from gateway_container.deps import GatewayDep
from gateway_container.forecast_feed import POLL_SECONDS, Cursor, ForecastFeed, ForecastsUnavailable, collect
from gateway_container.gateway import Gateway, checked_identifier
from gateway_container.models import ClaimPending, ForecastPoll

# What `POST /score` answers as claim_id (uuid4().hex[:16]).
CLAIM_ID = re.compile(r"^[0-9a-f]{16}$")
PARQUET = "application/vnd.apache.parquet"
PENDING_RETRY_AFTER_S = 5
MAX_WAIT_SECONDS = 30
KEEPALIVE_SECONDS = 15
RECONNECT_MS = 2000
BUSY_RETRY_AFTER_S = 5

FORECAST_STREAMS = Gauge("flts_gateway_forecast_streams", "GET /forecasts event streams and long polls open.")
FORECAST_REFUSALS = Counter(
    "flts_gateway_forecast_refusals_total",
    "GET /forecasts refused: the key's streams at their bound (per_key), the replica's (total), Kafka away.",
    ["reason"],
)

router = APIRouter()

Identifier = Annotated[str, Query(description="Whose results (a key may ask for its own identifiers only).")]
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ scored claims


@router.get(
    "/score/{claim_id}",
    tags=["scoring"],
    response_class=StreamingResponse,
    responses={
        200: {"description": "The scored claim, as the replica wrote it.", "content": {PARQUET: {}}},
        202: {"description": "Not scored yet: ask again after Retry-After seconds.", "model": ClaimPending},
        404: {"description": "No such claim for this identifier."},
    },
)
def scored_claim(claim_id: str, principal: Caller, gw: GatewayDep, identifier: Identifier = "global") -> Response:
    """The result of a `POST /score` claim: a parquet file, one row per window and forecast step (the forecast,
    and the actual and the error where the rows hold one, per target), streamed as the replica wrote it; 202
    while it is not written yet (a claim the replicas could not score is dead-lettered and stays 202)."""
    require_identifier(principal, identifier)
    checked_identifier(identifier)
    if not CLAIM_ID.match(claim_id):
        raise HTTPException(422, f"claim_id {claim_id!r} is not one POST /score gives (16 lowercase hex characters)")
    submitted = _submitted_at(gw, identifier, claim_id)
    if submitted is None:
        raise HTTPException(404, f"no claim {claim_id} for identifier {identifier!r}")
    uri = _result_uri(gw, identifier, claim_id, submitted)
    if uri is None:
        pending = ClaimPending(
            claim_id=claim_id, identifier=identifier, status="pending", submitted_at=submitted.isoformat()
        )
        return JSONResponse(
            pending.model_dump(),
            status_code=202,
            headers={"Retry-After": str(PENDING_RETRY_AFTER_S)},
        )
    return StreamingResponse(
        gw.store.iter_chunks(uri),
        media_type=PARQUET,
        headers={"Content-Disposition": f'attachment; filename="{claim_id}.parquet"'},
    )


def _submitted_at(gw: Gateway, identifier: str, claim_id: str) -> datetime | None:
    """When the claim's rows were stored (the claim exists for this identifier), or None."""
    key = scoring_upload_key(identifier, claim_id)
    objects, _ = gw.store.page(gw.settings.bucket_datasets, key, 1)
    if not objects or objects[0]["Key"] != key:
        return None
    return objects[0]["LastModified"].astimezone(UTC)


def _result_uri(gw: Gateway, identifier: str, claim_id: str, submitted: datetime) -> str | None:
    """The claim's result, once written. Its key carries the day the claim was published, just after its rows were
    stored: that day, or the next when the upload straddled midnight (or the day before, for the store's clock)."""
    for day in (submitted, submitted + timedelta(days=1), submitted - timedelta(days=1)):
        uri = inference_log_uri(gw.settings, identifier, day, claim_id)
        if gw.store.exists(uri):
            return uri
    return None


# ------------------------------------------------------------------------------------------ live forecasts


@dataclass
class StreamSlots:
    """The forecast readers open at once, per key and in all (GatewaySettings.forecast_streams_*), and the worker
    threads they read Kafka on (their own, so a stream never takes one the other routes need). Touched only on
    the event loop."""

    per_key: int
    total: int
    threads: anyio.CapacityLimiter
    held: dict[str, int] = field(default_factory=dict)

    def take(self, principal: Principal) -> None:
        """One slot for the key, or 429 with when to come back."""
        if sum(self.held.values()) >= self.total:
            FORECAST_REFUSALS.labels("total").inc()
            raise _busy(f"this gateway already serves {self.total} forecast streams (FORECAST_STREAMS_TOTAL)")
        if self.held.get(principal.sha256, 0) >= self.per_key:
            FORECAST_REFUSALS.labels("per_key").inc()
            raise _busy(
                f"key {principal.name!r} already holds {self.per_key} forecast streams (FORECAST_STREAMS_PER_KEY): "
                "close one first"
            )
        self.held[principal.sha256] = self.held.get(principal.sha256, 0) + 1
        FORECAST_STREAMS.inc()

    def give_back(self, principal: Principal) -> None:
        left = self.held.get(principal.sha256, 0) - 1
        if left > 0:
            self.held[principal.sha256] = left
        else:
            self.held.pop(principal.sha256, None)
        FORECAST_STREAMS.dec()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on one of the streams' threads (a cancelled caller waits for it to return)."""
        return await to_thread.run_sync(function, *args, limiter=self.threads)


def _busy(detail: str) -> HTTPException:
    return HTTPException(429, detail, headers={"Retry-After": str(BUSY_RETRY_AFTER_S)})


async def stream_slots(request: Request, gw: GatewayDep) -> StreamSlots:
    """The app's slots, made on first use (an async dependency: on the event loop, so made once)."""
    slots = getattr(request.app.state, "forecast_streams", None)
    if slots is None:
        settings = gw.settings
        slots = StreamSlots(
            settings.forecast_streams_per_key,
            settings.forecast_streams_total,
            anyio.CapacityLimiter(settings.forecast_streams_total),
        )
        request.app.state.forecast_streams = slots
    return slots


Slots = Annotated[StreamSlots, Depends(stream_slots)]


@router.get(
    "/forecasts",
    tags=["forecasts"],
    response_model=ForecastPoll,
    responses={
        200: {
            "description": "Without `wait`: an event stream, one `data:` line per forecast (JSON), its cursor as "
            "the event's id. With `wait`: {identifier, cursor, forecasts}.",
            "content": {"text/event-stream": {}, "application/json": {}},
        },
        429: {"description": "The key's (or this gateway's) forecast streams are at their bound."},
    },
)
async def live_forecasts(
    principal: Caller,
    gw: GatewayDep,
    slots: Slots,
    identifier: Identifier = "global",
    after: Annotated[
        str | None, Query(description="Go on after this cursor (an event's id, or a poll's `cursor`).")
    ] = None,
    wait: Annotated[
        float | None,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="Long poll: answer JSON once there are forecasts, or after this."),
    ] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Any:
    """An identifier's forecasts as the inference replicas publish them (one per live row, `POST /measurements`):
    as Server-Sent Events, or, with `wait`, a long poll. Without a cursor, from now on; with one (`after`, or the
    `Last-Event-ID` an EventSource sends when it reconnects), from there. A stream ends after
    FORECAST_STREAM_SECONDS with an `end` event (an EventSource reconnects and goes on); a poll waits no longer."""
    require_identifier(principal, identifier)
    checked_identifier(identifier)
    cursor = _cursor(after or last_event_id)
    slots.take(principal)
    try:
        feed = await _open(gw, slots, identifier, cursor)
    except BaseException:
        slots.give_back(principal)
        raise

    async def release() -> None:
        with anyio.CancelScope(shield=True):
            try:
                await slots.run(feed.close)
            finally:
                slots.give_back(principal)

    if wait is None:
        return _EventStream(_events(feed, slots, gw.settings.forecast_stream_seconds), release)
    try:
        forecasts = await slots.run(collect, feed, min(wait, gw.settings.forecast_stream_seconds))
    except (ForecastsUnavailable, KafkaException) as exc:
        raise _unavailable(exc) from exc
    finally:
        await release()
    return ForecastPoll(identifier=identifier, cursor=str(feed.cursor), forecasts=forecasts)


def _cursor(text: str | None) -> Cursor | None:
    try:
        return Cursor.parse(text) if text else None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


async def _open(gw: Gateway, slots: StreamSlots, identifier: str, cursor: Cursor | None) -> ForecastFeed:
    try:
        return await slots.run(ForecastFeed, gw.settings, identifier, cursor)
    except (ForecastsUnavailable, KafkaException) as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> HTTPException:
    FORECAST_REFUSALS.labels("unavailable").inc()
    return HTTPException(503, f"the forecasts cannot be read now: {exc}", headers={"Retry-After": "5"})


async def _events(feed: ForecastFeed, slots: StreamSlots, seconds: float) -> AsyncIterator[str]:
    """The event stream: each forecast with its cursor as the event id; a comment with the cursor when nothing came
    for KEEPALIVE_SECONDS (the connection stays open, and a reconnect goes on from there); `end` after ``seconds``;
    `error` when the topic cannot be read (then the stream ends)."""
    yield f"retry: {RECONNECT_MS}\nid: {feed.cursor}\n\n"
    ends = time.monotonic() + seconds
    quiet_since = time.monotonic()
    while time.monotonic() < ends:
        try:
            found = await slots.run(feed.read, POLL_SECONDS)
        except (ForecastsUnavailable, KafkaException) as exc:
            # Counted, and said: the stream ends here (an EventSource comes back after `retry`).
            yield f"event: error\nid: {feed.cursor}\ndata: {json.dumps({'detail': _unavailable(exc).detail})}\n\n"
            return
        if found:
            yield "".join(f"id: {cursor}\ndata: {forecast.model_dump_json()}\n\n" for cursor, forecast in found)
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            yield f": keep-alive\nid: {feed.cursor}\n\n"
            quiet_since = time.monotonic()
    end = json.dumps({"cursor": str(feed.cursor), "reason": f"a stream lasts {seconds:g} s: reconnect to go on"})
    yield f"event: end\nid: {feed.cursor}\ndata: {end}\n\n"


class _EventStream(StreamingResponse):
    """`text/event-stream` that gives its feed and slot back however it ends: finished, client gone, cancelled."""

    def __init__(self, events: AsyncIterator[str], release: Callable[[], Any]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()
