"""Live forecasts inside the inference service: `measurements` in, one `forecasts` event per new row out.

It runs in the inference replicas for the reason batch scoring does (see `scoring`): the champions
and each identifier's latest window are already there, and the window a measurement extends is the
very one `POST /predict` without rows forecasts from. The replicas share one consumer group
(`<CONSUMER_GROUP>-measurements`); rows are keyed by identifier, so one replica owns a series, keeps
its window and publishes its forecasts (another replica's /predict without rows for that series
answers from the end of its processed data, or the last window it owned).

Each poll takes up to `BATCH_ROWS` rows; every row updates its series' window in arrival order, and
the windows of all the rows that advanced a series go through one forward pass per model. Exactly once:
a batch's forecasts and dead letters are published in one Kafka transaction with the batch's offsets
(`TransactionalProducer`), so a replica killed mid-batch leaves nothing that `read_committed` readers
see, and the batch is forecast again by the partition's next owner. That owner first rebuilds the
windows of the partitions it is given from the rows before their committed offsets (at most
`stream_lookback_rows` per partition), so the forecasts it makes are the ones the dead replica would
have made. The stream starts once the replica's champions are loaded (`ready`): a row read before
then would be dropped as `no_champion`. Rows are handled deterministically:

- a row is snapped to the champion's grid as preprocessing snaps it; steps no row covered, and
  missing cells, are filled as preprocessing fills gaps (a window more than half missing: no forecast);
- a row after the last one advances the window and is forecast from (`forecast`);
- a row at or before the last one but inside the window updates its step, the last of duplicates
  winning as in preprocessing, and is not forecast from (`late`);
- a row older than the window is ignored (`too_old`); a row for an identifier the registry names no champion
  for is ignored (`no_champion`); each outcome is counted in `flts_stream_rows_total`;
- a message that is not a measurement, or names a column the champion does not know, is dead-lettered.

A batch that fails is never half-done: its transaction is aborted, its windows are put back, the consumer seeks
back to the batch's first offsets (it stays in the group: no rebalance) and the batch is delivered again after a
backoff (`flts_stream_batch_retries_total`). An outage (a champion known to the registry that could not be loaded,
MLflow, S3 or the broker unreachable) is waited out for as long as it lasts: no row is lost. Any other failure is
counted as a strike; after `MAX_DELIVERIES` strikes in a row the batch is handled one row per transaction, and the
row that still fails on its own is dead-lettered with the reason (and goes into its window, as a replay puts it).

The champion is looked up for every row, so a promotion takes effect on the next row; a window kept
for the previous champion carries over when the new one reads the same columns and length. The identifiers of
the partitions the replica owns are pinned in its champion cache (`Champions.pin`), so a replica that owns more
series than `max_loaded_champions` loads each of them once rather than on every other row.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import Counter, Histogram

from flts.consumers import Supervisor, open_consumer
from flts.kafka import TransactionalProducer, TransactionStuck, send_dead_letter
from flts.messages import SCHEMA_VERSION, Forecast, Measurement, MessageError
from flts.observability import log_context
from flts.outages import is_outage
from flts.predict import RequestError, ServingModel, Window
from flts.settings import InferenceSettings

if TYPE_CHECKING:
    from inference_container.champions import Champions

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
# How long a poll waits to fill a batch: the floor of the lag at a low rate; one transaction per wait at most.
BATCH_WAIT_S = 0.05
# A replica killed mid-transaction holds its partitions' offsets pending this long at most (when it comes back
# under another name; under the same one, it aborts its own leftover at once).
TRANSACTION_TIMEOUT_MS = 10_000
REBUILD_TIMEOUT_S = 60.0
# A batch that failed this many times in a row for a reason other than an outage is handled a row at a time.
MAX_DELIVERIES = 3
# The wait before a failed batch is delivered again doubles from the first to the last.
RETRY_FIRST_S, RETRY_LAST_S = 0.5, 30.0

STREAM_ROWS = Counter(
    "flts_stream_rows_total",
    "Measurements consumed, by outcome: forecast, late, too_old, no_champion, incomplete, not_finite, dead_letter.",
    ["outcome"],
)
# Each outcome's child counter, looked up once (a labels() call per row was 5 % of the forecaster's time).
ROWS_BY_OUTCOME = {
    outcome: STREAM_ROWS.labels(outcome)
    for outcome in ("forecast", "late", "too_old", "no_champion", "incomplete", "not_finite", "dead_letter")
}
ROWS_REPLAYED = Counter(
    "flts_stream_rows_replayed_total", "Measurements read again to rebuild the windows of partitions assigned."
)
BATCH_RETRIES = Counter(
    "flts_stream_batch_retries_total",
    "Batches of measurements aborted and delivered again, by reason: outage (waited out) or error (a strike).",
    ["reason"],
)
FORECASTS_PUBLISHED = Counter("flts_stream_forecasts_total", "Forecast events published on the forecasts topic.")
STREAM_LAG = Histogram(
    "flts_stream_lag_seconds",
    "End-to-end lag: a measurement published -> its forecast published.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RowError(ValueError):
    """A measurement the champion cannot read (dead-lettered with this reason)."""


class ChampionUnavailable(RuntimeError):
    """The registry names a champion for the row's identifier, but it could not be loaded (MLflow or S3 down): the
    batch waits for it rather than counting the row `no_champion`."""


# Kafka refusing a message for what it holds: delivering it again fails the same way (a strike, not an outage).
MESSAGE_FAULTS = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}


def is_transient(exc: BaseException) -> bool:
    """A failure that goes away by itself (waited out, never dead-lettered): a champion that could not be loaded
    yet, the broker, MLflow or S3 unreachable; not a message Kafka refuses for its content."""
    if isinstance(exc, KafkaException):
        return exc.args[0].code() not in MESSAGE_FAULTS
    return isinstance(exc, ChampionUnavailable) or is_outage(exc)


@dataclass
class RecentSteps:
    """The last rows_needed grid steps of one series as measured (NaN: not measured), for one model layout."""

    layout: tuple[Any, ...]
    nanoseconds: np.ndarray  # int64 [rows], consecutive grid steps
    values: np.ndarray  # float64 [rows, measured]


def _layout(model: ServingModel) -> tuple[Any, ...]:
    return (model.rows_needed, tuple(model.measured_columns), model.step_ns, model.anchor_ns)


class StreamForecaster:
    """Turns batches of measurement messages into forecast events; keeps the windows between batches."""

    def __init__(
        self, settings: InferenceSettings, champions: Champions, producer: TransactionalProducer | None = None
    ) -> None:
        self.settings = settings
        self.champions = champions
        self.group = streaming_group(settings)
        self.producer = producer or stream_producer(settings)
        self._steps: dict[str, RecentSteps] = {}
        self._latest_before: dict[str, Window | None] = {}  # this batch's changes to the windows /predict uses
        self._series_of: dict[tuple[str, int], set[str]] = {}  # the identifiers seen on each partition owned

    def handle_batch(self, messages: list[Any], consumer: Consumer) -> int:
        """Apply every row in order, forecast the windows that advanced, publish, and commit the batch's offsets
        in the same transaction; returns forecasts published.

        When the batch fails (the broker, a forecast), the transaction is aborted and the windows are put back as
        they were before it, so the batch delivered again (from the committed offsets) advances them again and is
        forecast again.
        """
        kept_steps, self._latest_before = dict(self._steps), {}
        self.producer.begin()
        try:
            published = self._handle(messages)
            self.producer.commit(consumer, messages)
            return published
        except Exception:
            self._steps = kept_steps
            for identifier, window in self._latest_before.items():
                self.champions.remember(identifier, window)
            try:
                self.producer.abort()
            except Exception:
                log.warning("aborting the batch's transaction failed: the broker aborts it", exc_info=True)
            raise

    def handle_each(self, messages: list[Any], consumer: Consumer) -> int:
        """The batch a row per transaction (after `MAX_DELIVERIES` strikes): a row that still fails for a reason
        other than an outage is dead-lettered with its offset, and goes into its window as a replay puts it."""
        published = 0
        for msg in messages:
            try:
                published += self.handle_batch([msg], consumer)
            except Exception as exc:
                if is_transient(exc):
                    raise
                self.producer.begin()
                send_dead_letter(self.producer, self.settings, msg, f"forecasting failed: {exc!r}", self.group)
                self.producer.commit(consumer, [msg])
                ROWS_BY_OUTCOME["dead_letter"].inc()
                self.replay([msg], counted=False)
        return published

    def replay(self, messages: list[Any], counted: bool = True) -> None:
        """Rows already handled (before the committed offsets): they only put the windows back as they were.

        A champion that cannot be loaded raises `ChampionUnavailable`: the rebuild is done again once it can (rows
        applied twice leave a window as once)."""
        for msg in messages:
            try:
                self.apply(Measurement.from_bytes(msg.value()))
            except (MessageError, RowError):
                continue  # dead-lettered when it was first read
        if counted:
            ROWS_REPLAYED.inc(len(messages))

    def own(self, msg: Any, identifier: str) -> None:
        """The row's series belongs to a partition this replica owns: its champion stays held while it does."""
        series = self._series_of.setdefault((msg.topic(), msg.partition()), set())
        if identifier not in series:
            series.add(identifier)
            self.champions.pin({identifier})

    def disown(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked or lost: their series' champions may be dropped again."""
        for tp in partitions:
            self.champions.unpin(self._series_of.pop((tp.topic, tp.partition), set()))

    def _handle(self, messages: list[Any]) -> int:
        due: list[tuple[ServingModel, Window, Measurement]] = []
        for msg in messages:
            try:
                row = Measurement.from_bytes(msg.value())
                self.own(msg, row.identifier)
                with log_context(identifier=row.identifier):
                    outcome = self.apply(row)
            except (MessageError, RowError) as exc:
                send_dead_letter(self.producer, self.settings, msg, f"invalid measurement: {exc}", self.group)
                ROWS_BY_OUTCOME["dead_letter"].inc()
                continue
            if isinstance(outcome, str):
                ROWS_BY_OUTCOME[outcome].inc()
            else:
                due.append(outcome)
        events = self._forecasts(due)
        if events:
            self.producer.publish_many(self.settings.topic_forecasts, events)
            published = datetime.now(UTC)
            for event in events:
                STREAM_LAG.observe((published - event.measured_at).total_seconds())
            FORECASTS_PUBLISHED.inc(len(events))
        return len(events)

    def apply(self, row: Measurement) -> str | tuple[ServingModel, Window, Measurement]:
        """Put one row into its series' window: the window to forecast from, or the outcome that says why not."""
        model = self.champions.get(row.identifier)
        if model is None:
            if self.champions.known(row.identifier) is not None:
                raise ChampionUnavailable(f"the champion of {row.identifier!r} could not be loaded")
            return "no_champion"
        unknown = sorted(set(row.values) - set(model.measured_columns))
        if unknown:
            raise RowError(
                f"columns {unknown} are not read by the champion of {row.identifier!r} ({model.measured_columns})"
            )
        steps = self._recent(row.identifier, model)
        step = model.step_ns
        at = _nanoseconds(row.ts)
        at = model.anchor_ns + (at - model.anchor_ns + step // 2) // step * step  # snapped as preprocess snaps
        rows = model.rows_needed
        last = int(steps.nanoseconds[-1]) if steps is not None else None
        if steps is not None and last is not None and at <= last - rows * step:
            return "too_old"
        cells = np.array([_cell(row.values.get(name)) for name in model.measured_columns])
        if steps is not None and last is not None and at <= last:
            values = steps.values.copy()  # a copy: the state before the batch stays intact until it is published
            values[rows - 1 - (last - at) // step] = cells
            steps = self._steps[row.identifier] = RecentSteps(steps.layout, steps.nanoseconds, values)
            self._remember_window(row.identifier, model, steps)
            return "late"
        shift = rows if last is None else min(rows, (at - last) // step)
        values = np.full((rows, len(cells)), np.nan)
        if steps is not None and shift < rows:
            values[: rows - shift] = steps.values[shift:]
        values[-1] = cells
        steps = RecentSteps(_layout(model), at - step * np.arange(rows - 1, -1, -1, dtype=np.int64), values)
        self._steps[row.identifier] = steps
        window = self._remember_window(row.identifier, model, steps)
        return "incomplete" if window is None else (model, window, row)

    def _recent(self, identifier: str, model: ServingModel) -> RecentSteps | None:
        """The series' steps for this model: kept ones, else those /predict knows (the end of the processed data)."""
        steps = self._steps.get(identifier)
        if steps is not None and steps.layout == _layout(model):
            return steps
        latest = self.champions.latest(identifier)
        if latest is None:
            return None
        return RecentSteps(_layout(model), latest.nanoseconds.copy(), latest.values.copy())

    def _remember_window(self, identifier: str, model: ServingModel, steps: RecentSteps) -> Window | None:
        try:
            window = model.window_on_grid(steps.nanoseconds, steps.values)
        except RequestError:
            return None
        self._latest_before.setdefault(identifier, self.champions.latest(identifier))
        self.champions.remember(identifier, window)
        return window

    def _forecasts(self, due: list[tuple[ServingModel, Window, Measurement]]) -> list[Forecast]:
        """One forward pass per model for all the windows due; a window whose forecast is not finite is counted."""
        by_model: dict[int, list[int]] = {}
        for index, (model, _, _) in enumerate(due):
            by_model.setdefault(id(model), []).append(index)
        events: list[Forecast] = []
        made_at = datetime.now(UTC)
        for indices in by_model.values():
            model = due[indices[0]][0]
            forecasts = model.forecast([due[i][1] for i in indices], model.output_seq_len)
            identity = model.identity
            for position, index in enumerate(indices):
                if forecasts.errors[position] is not None:
                    ROWS_BY_OUTCOME["not_finite"].inc()
                    continue
                _, window, row = due[index]
                events.append(
                    # Built from validated rows and our own forecasts: no re-validation, and every field given
                    # (pydantic inspects a default factory's signature each time it calls it).
                    Forecast.model_construct(
                        schema_version=SCHEMA_VERSION,
                        event_id=uuid.uuid4().hex,
                        created_at=made_at,
                        identifier=row.identifier,
                        model_type=identity.model_type,
                        model_version=identity.model_version,
                        run_id=identity.run_id,
                        last_observed=_datetime(window.last_ns),
                        measured_at=row.created_at,
                        ts=[_datetime(ns) for ns in forecasts.nanoseconds[position].tolist()],
                        values={
                            name: forecasts.values[position, :, column].tolist()
                            for column, name in enumerate(model.target_columns)
                        },
                    )
                )
                ROWS_BY_OUTCOME["forecast"].inc()
        return events


def _cell(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _nanoseconds(moment: datetime) -> int:
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


def _datetime(nanoseconds: int) -> datetime:
    return datetime.fromtimestamp(nanoseconds / 1e9, UTC)


def streaming_group(settings: InferenceSettings) -> str:
    """One group for all replicas: each series is followed by the replica that owns its partition."""
    return f"{settings.consumer_group}-measurements"


def transactional_id(settings: InferenceSettings) -> str:
    """Stable for a replica's slot (its host name and port: a restarted process, a pod of a StatefulSet or a
    compose container keeps it), unique among live replicas; under the group's prefix, which the ACLs grant."""
    return f"{streaming_group(settings)}@{socket.gethostname()}:{settings.http_port}"


def stream_producer(settings: InferenceSettings) -> TransactionalProducer:
    return TransactionalProducer(settings, transactional_id(settings), TRANSACTION_TIMEOUT_MS)


def rows_before_committed(
    settings: InferenceSettings, consumer: Consumer, partitions: list[TopicPartition]
) -> list[Any]:
    """The last `stream_lookback_rows` messages before each partition's committed offset, in offset order."""
    ranges = {
        (tp.topic, tp.partition): (max(0, tp.offset - settings.stream_lookback_rows), tp.offset)
        for tp in consumer.committed(partitions, timeout=30)
        if tp.offset > 0 and settings.stream_lookback_rows > 0  # OFFSET_INVALID (< 0): nothing committed yet
    }
    if not ranges:
        return []
    options = {
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",  # the look-back's start deleted by retention: the oldest row kept
    }
    found: list[Any] = []
    with open_consumer(settings, f"{streaming_group(settings)}-rebuild", options) as reader:
        reader.assign([TopicPartition(topic, partition, start) for (topic, partition), (start, _) in ranges.items()])
        waiting, deadline = set(ranges), time.monotonic() + REBUILD_TIMEOUT_S
        while waiting and time.monotonic() < deadline:
            for msg in reader.consume(BATCH_ROWS, 0.5):
                key = (msg.topic(), msg.partition())
                if key not in waiting:
                    continue
                if msg.error() is None and msg.offset() < ranges[key][1]:
                    found.append(msg)
                if msg.error() is not None or msg.offset() >= ranges[key][1] - 1:
                    waiting.discard(key)  # at the committed offset, or the end (compacted, deleted)
        if waiting:
            raise TimeoutError(f"rebuilding the windows of {sorted(waiting)} took over {REBUILD_TIMEOUT_S:.0f}s")
    return found


def stream_forecasts(
    settings: InferenceSettings, champions: Champions, stop: threading.Event, ready: threading.Event | None = None
) -> None:
    """Once `ready` (the replica's champions loaded), consume `measurements` until `stop`: a batch at a time, its
    forecasts and offsets committed in one transaction; partitions assigned have their windows rebuilt first.

    A failed batch is delivered again from its first offsets (`Redelivery`) without leaving the group; only a
    failure of the consumer itself closes it and starts again from the committed offsets.
    """
    while ready is not None and not ready.wait(1.0):
        if stop.is_set():
            return
    forecaster = StreamForecaster(settings, champions)

    def consume(stop: threading.Event) -> None:
        """One consumer's life: it is closed when this ends, and a failure gets a fresh producer (a fenced or failed
        transactional one cannot go on) before the supervisor starts again from the committed offsets."""
        assigned: list[TopicPartition] = []  # partitions given by the last rebalance, their windows not yet rebuilt
        options = {
            "client.id": settings.service_name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": settings.session_timeout_ms,
            "partition.assignment.strategy": "cooperative-sticky",
        }
        try:
            with open_consumer(settings, forecaster.group, options) as consumer:
                consumer.subscribe(
                    [settings.topic_measurements],
                    on_assign=lambda _consumer, partitions: assigned.extend(partitions),
                    on_revoke=lambda _consumer, partitions: forecaster.disown(partitions),
                    on_lost=lambda _consumer, partitions: forecaster.disown(partitions),
                )
                consume_batches(settings, forecaster, consumer, assigned, stop)
        except Exception:
            forecaster.producer = stream_producer(settings)
            raise

    Supervisor("measurement consumer", consume, stop).run()


def consume_batches(
    settings: InferenceSettings,
    forecaster: StreamForecaster,
    consumer: Consumer,
    assigned: list[TopicPartition],
    stop: threading.Event,
) -> None:
    """A batch at a time until `stop`, rebuilding the windows of partitions just `assigned` first; a failed batch
    is delivered again (`Redelivery`), a failure of the consumer itself is raised."""
    redelivery = Redelivery(stop)
    while not stop.is_set():
        batch = [m for m in consumer.consume(BATCH_ROWS, BATCH_WAIT_S) if not m.error()]
        try:
            if assigned:
                forecaster.replay(rows_before_committed(settings, consumer, assigned))
                assigned.clear()
            if batch:
                redelivery.handle(forecaster, batch, consumer)
        except Exception as exc:
            redelivery.failed(forecaster, batch, consumer, exc)


class Redelivery:
    """What a stream consumer does with a batch that failed: seek back to its first offsets and deliver it again
    after a backoff, waiting out outages for as long as they last and counting other failures as strikes."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.strikes = 0
        self.wait_s = RETRY_FIRST_S

    def handle(self, forecaster: StreamForecaster, batch: list[Any], consumer: Consumer) -> None:
        if self.strikes >= MAX_DELIVERIES:
            forecaster.handle_each(batch, consumer)
        else:
            forecaster.handle_batch(batch, consumer)
        self.strikes, self.wait_s = 0, RETRY_FIRST_S

    def failed(self, forecaster: StreamForecaster, batch: list[Any], consumer: Consumer, exc: Exception) -> None:
        transient = is_transient(exc)
        if not transient:
            self.strikes += 1
        BATCH_RETRIES.labels("outage" if transient else "error").inc()
        log.warning(
            "a batch of measurements failed; delivering it again",
            extra={"rows": len(batch), "strikes": self.strikes, "retry_in_s": self.wait_s, "error": repr(exc)},
        )
        if isinstance(exc, KafkaException | TransactionStuck):  # a fenced, failed or stuck producer cannot go on
            forecaster.producer = stream_producer(settings=forecaster.settings)
        seek_back(consumer, batch)
        self.stop.wait(self.wait_s)
        self.wait_s = min(self.wait_s * 2, RETRY_LAST_S)


def seek_back(consumer: Consumer, batch: list[Any]) -> None:
    """Position each partition of the batch at its first offset in it (a revoked one is its next owner's)."""
    first: dict[tuple[str, int], int] = {}
    for msg in batch:
        key = (msg.topic(), msg.partition())
        first[key] = min(first.get(key, msg.offset()), msg.offset())
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException:
            log.info("not seeking back a partition no longer assigned", extra={"partition": partition})
