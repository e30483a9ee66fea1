"""Live forecasts inside the inference service: `measurements` in, one `forecasts` event per new row out.

It runs in the inference replicas for the reason batch scoring does (see `scoring`): the champions
and each identifier's latest window are already there, and the window a measurement extends is the
very one `POST /predict` without rows forecasts from. The replicas share one consumer group
(`<CONSUMER_GROUP>-measurements`); rows are keyed by identifier, so one replica owns a series, keeps
its window and publishes its forecasts (another replica's /predict without rows for that series
answers from the end of its processed data, or the last window it owned).

Each poll takes up to `BATCH_ROWS` rows; every row updates its series' window in arrival order, and
the windows of all the rows that advanced a series go through one forward pass per model. Offsets
are committed once the batch's forecasts are acknowledged (at-least-once: a replica killed mid-batch
publishes the batch's forecasts again). Rows are handled deterministically:

- a row is snapped to the champion's grid as preprocessing snaps it; steps no row covered, and
  missing cells, are filled as preprocessing fills gaps (a window more than half missing: no forecast);
- a row after the last one advances the window and is forecast from (`forecast`);
- a row at or before the last one but inside the window updates its step, the last of duplicates
  winning as in preprocessing, and is not forecast from (`late`);
- a row older than the window is ignored (`too_old`); a row for an identifier without a champion is
  ignored (`no_champion`); each outcome is counted in `flts_stream_rows_total`;
- a message that is not a measurement, or names a column the champion does not know, is dead-lettered.

The champion is looked up for every row, so a promotion takes effect on the next row; a window kept
for the previous champion carries over when the new one reads the same columns and length.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from confluent_kafka import Consumer
from prometheus_client import Counter, Histogram

from flts.config import InferenceSettings
from flts.kafka import MessageProducer, send_dead_letter
from flts.messages import SCHEMA_VERSION, Forecast, Measurement, MessageError
from flts.observability import log_context
from flts.predict import RequestError, ServingModel, Window

if TYPE_CHECKING:
    from inference_container.champions import Champions

log = logging.getLogger(__name__)

BATCH_ROWS = 2000

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
FORECASTS_PUBLISHED = Counter("flts_stream_forecasts_total", "Forecast events published on the forecasts topic.")
STREAM_LAG = Histogram(
    "flts_stream_lag_seconds",
    "End-to-end lag: a measurement published -> its forecast published.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RowError(ValueError):
    """A measurement the champion cannot read (dead-lettered with this reason)."""


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

    def __init__(self, settings: InferenceSettings, champions: Champions, producer: MessageProducer | None = None):
        self.settings = settings
        self.champions = champions
        self.producer = producer or MessageProducer(settings)
        self.group = streaming_group(settings)
        self._steps: dict[str, RecentSteps] = {}
        self._latest_before: dict[str, Window | None] = {}  # this batch's changes to the windows /predict uses

    def handle_batch(self, messages: list[Any]) -> int:
        """Apply every row in order, forecast the windows that advanced, publish; returns forecasts published.

        When the batch fails (the broker, a forecast), the windows are put back as they were before it, so the
        batch delivered again (from the committed offsets) advances them again and is forecast again.
        """
        kept_steps, self._latest_before = dict(self._steps), {}
        try:
            return self._handle(messages)
        except Exception:
            self._steps = kept_steps
            for identifier, window in self._latest_before.items():
                self.champions.remember(identifier, window)
            raise

    def _handle(self, messages: list[Any]) -> int:
        due: list[tuple[ServingModel, Window, Measurement]] = []
        for msg in messages:
            try:
                row = Measurement.from_bytes(msg.value())
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


def stream_forecasts(settings: InferenceSettings, champions: Champions, stop: threading.Event) -> None:
    """Consume `measurements` until `stop`: a batch at a time, committed once its forecasts are acknowledged.

    A failure (the broker or a forecast) closes the consumer and starts again from the committed offsets.
    """
    forecaster = StreamForecaster(settings, champions)
    while not stop.is_set():
        consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": forecaster.group,
                "client.id": settings.service_name,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        consumer.subscribe([settings.topic_measurements])
        try:
            while not stop.is_set():
                batch = [m for m in consumer.consume(BATCH_ROWS, 0.2) if not m.error()]
                if batch:
                    forecaster.handle_batch(batch)
                    consumer.commit(asynchronous=False)
        except Exception:
            log.exception("the measurement stream failed; resuming from the committed offsets")
            stop.wait(2)
        finally:
            consumer.close()
