"""Kafka scoring inside the inference service: batch claims from `inference-data` into `inference-logs`.

Why here and not in a scorer service of its own: scoring needs exactly what an inference replica
already holds (every identifier's champion, hot-swapped on `model-selected`), so a seventh container
would only load the same models a second time and follow the same promotions. The replicas share one
consumer group for claims (`<CONSUMER_GROUP>-scoring`), so each claim is scored by one replica, and
the HPA that scales /predict scales scoring with it. The cost: a large claim takes CPU from /predict
on the replica that scores it (one forward pass per chunk of windows; ~10k windows/s on one core).

A claim is scored once: its result object (`inference-logs/<identifier>/<date>/<claim_id>.parquet`,
one row per window and forecast step, with the actual value and the error where the series has one)
is looked for before anything is computed; a claim delivered again only announces it again on
`inference-scored` (what it says is kept in the parquet footer, `SUMMARY_KEY`). A missing or altered object
behind a claim, or rows the champion cannot read, are dead-lettered with the reason (`PermanentError`).

Memory: the claim's rows are held once, on the champion's grid (`Series`, 8 bytes a cell); the result is made
and written a part at a time (`PART_CELLS` cells, one parquet row group each) and streamed to the store as it is
written, so the result, several times the rows' size, is never whole in memory (benchmarks/RESULTS.md, "Batch
scoring at the upload caps").
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter, Histogram

from flts.config import load_pipeline_config
from flts.consumers import Supervisor
from flts.data.io import DataError, read_measurements
from flts.data.metadata import PreprocessingMetadata
from flts.kafka import ConsumerLoop, MessageProducer, PermanentError
from flts.layout import decision_uri, inference_log_uri
from flts.messages import InferenceData, InferenceScored, ObjectRef
from flts.predict import Forecasts, RequestError, Series, ServingModel, processed_series, raw_series
from flts.records import EvalDecision
from flts.settings import InferenceSettings
from flts.storage import ObjectNotFound, ObjectStore, StoredObject, sha256_bytes

log = logging.getLogger(__name__)

# Cells (rows x columns) of the result table made at once: one parquet row group, about 32 MB of float64.
PART_CELLS = 4_000_000
# The parquet footer's key of what `inference-scored` announces (rows, windows, model, mean absolute errors).
SUMMARY_KEY = "flts.summary"

SCORED_WINDOWS = Counter("flts_scoring_windows_total", "Windows forecast for batch claims.")
SCORED_CLAIMS = Counter("flts_scoring_claims_total", "Batch claims by outcome: scored, already_scored.", ["outcome"])
SCORING_SECONDS = Histogram(
    "flts_scoring_claim_seconds",
    "Time to score one batch claim (read, forecast, write).",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


class BatchScorer:
    """Handles one `inference-data` claim: score every window of its rows with the identifier's champion."""

    def __init__(
        self,
        settings: InferenceSettings,
        champion: Callable[[str], ServingModel | None],
        store: ObjectStore | None = None,
        producer: MessageProducer | None = None,
    ) -> None:
        self.settings = settings
        self.champion = champion
        self.store = store or ObjectStore(settings)
        self.producer = producer or MessageProducer(settings)
        self.data_config = load_pipeline_config(settings.pipeline_config)

    def handle(self, claim: InferenceData) -> None:
        started = time.perf_counter()
        uri = inference_log_uri(self.settings, claim.identifier, claim.created_at.astimezone(UTC), claim.claim_id)
        if self.store.exists(uri):
            log.info("claim already scored; announcing its result again", extra={"result": uri})
            self._announce(claim, self.store.stored(uri), self._recorded_summary(uri))
            SCORED_CLAIMS.labels("already_scored").inc()
            return
        model = self._wait_for_champion(claim)
        series = self._series(claim, model)
        with self.store.writer(uri) as sink:
            summary = write_result(sink, model, series, claim.data.uri)
        assert sink.stored is not None
        self._announce(claim, sink.stored, summary)
        SCORED_WINDOWS.inc(summary["windows"])
        SCORED_CLAIMS.labels("scored").inc()
        seconds = time.perf_counter() - started
        SCORING_SECONDS.observe(seconds)
        log.info(
            "claim scored",
            extra={"result": uri, "windows": summary["windows"], "seconds": round(seconds, 3), "by": model.identity},
        )

    def _recorded_summary(self, uri: str) -> dict[str, Any]:
        """What the result's footer records for its announcement; for a result written before footers held it,
        worked out from the whole table."""
        tail = self.store.get_tail(uri, 8)
        footer = self.store.get_tail(uri, int.from_bytes(tail[:4], "little") + 8)
        recorded = (pq.read_metadata(io.BytesIO(b"PAR1" + footer)).metadata or {}).get(SUMMARY_KEY.encode())
        if recorded is not None:
            return json.loads(recorded)
        return table_summary(pd.read_parquet(io.BytesIO(self.store.get_bytes(uri))))

    def _announce(self, claim: InferenceData, stored: StoredObject, summary: dict[str, Any]) -> None:
        scored = InferenceScored(
            identifier=claim.identifier,
            claim_id=claim.claim_id,
            dataset_id=claim.dataset_id,
            result=ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=summary["rows"]),
            windows=summary["windows"],
            model_type=summary["model_type"],
            model_version=summary["model_version"],
            run_id=summary["run_id"],
            mean_absolute_error=summary["mean_absolute_error"],
        )
        self.producer.publish(self.settings.topic_inference_scored, scored)

    def _wait_for_champion(self, claim: InferenceData) -> ServingModel:
        """The champion to score with: for a lineage's claim, wait until eval has decided the lineage and, when it
        promoted it, until this replica serves it; else the current champion. The wait ends scoring_wait_seconds
        after the claim was published, not after it was read: a replica replaying old claims (a new consumer
        group, a lineage eval never decided) does not hold every claim behind them for the full wait again."""
        deadline = claim.created_at.timestamp() + self.settings.scoring_wait_seconds
        while True:
            model = self.champion(claim.identifier)
            if model is not None and self._settled(claim, model):
                return model
            if time.time() >= deadline:
                if model is not None:
                    return model
                raise PermanentError(
                    f"no champion for identifier {claim.identifier!r} after {self.settings.scoring_wait_seconds:g} s"
                )
            time.sleep(1.0)

    def _settled(self, claim: InferenceData, model: ServingModel) -> bool:
        """Eval has decided the claim's lineage (an interim champion served meanwhile does not count) and, when it
        promoted the lineage, this replica serves the promoted run."""
        if claim.config_hash is None:
            return True
        uri = decision_uri(self.settings, claim.identifier, claim.config_hash)
        if not self.store.exists(uri):
            return False
        decision = EvalDecision.parse(self.store.get_json(uri), uri)
        if decision.outcome != "promoted":
            return True
        return model.identity.config_hash == claim.config_hash and model.identity.run_id == decision.run_id

    def _series(self, claim: InferenceData, model: ServingModel) -> Series:
        """The claim's rows on the champion's grid and in its column order (a PermanentError says why not)."""
        try:
            if claim.rows == "raw":
                return raw_series(self._frame(claim.data), model.metadata)  # the file's bytes and frame freed at once
            assert claim.metadata is not None  # the message's validator guarantees it
            lineage = PreprocessingMetadata.parse(self.store.get_json(claim.metadata.uri), claim.metadata.uri)
            series = processed_series(pd.read_parquet(io.BytesIO(self._verified(claim.data))), lineage)
        except ObjectNotFound as exc:
            raise PermanentError(f"claimed object is missing: {exc}") from exc
        except (DataError, KeyError, ValueError) as exc:
            raise PermanentError(f"{claim.data.uri}: rows the champion cannot read: {exc}") from exc
        measured = list(lineage.measured_columns)
        absent = [name for name in model.measured_columns if name not in measured]
        if absent:
            raise PermanentError(f"{claim.data.uri} lacks the champion's columns {absent}")
        order = [measured.index(name) for name in model.measured_columns]
        return Series(series.nanoseconds, series.values[:, order], series.gap)

    def _frame(self, ref: ObjectRef) -> pd.DataFrame:
        return read_measurements(self._verified(ref), self.data_config.data, self.data_config.limits)

    def _verified(self, ref: ObjectRef) -> bytes:
        data = self.store.get_bytes(ref.uri)
        if sha256_bytes(data) != ref.sha256:
            raise PermanentError(f"{ref.uri} does not match the sha256 in the claim")
        return data


def write_result(sink: IO[bytes], model: ServingModel, series: Series, source: str) -> dict[str, Any]:
    """Forecast every window of ``series`` and write the result table to ``sink`` as parquet, a part (`PART_CELLS`,
    one row group) at a time; returns what `inference-scored` announces, also kept in the footer (`SUMMARY_KEY`).
    ``source`` names the rows in a PermanentError."""
    rows_needed, horizon = model.rows_needed, model.output_seq_len
    windows = len(series.nanoseconds) - rows_needed + 1
    if windows < 1:
        raise PermanentError(f"{source}: {len(series.nanoseconds)} rows; the model needs at least {rows_needed}")
    columns = 6 + 3 * len(model.target_columns)
    per_part = max(1, PART_CELLS // (columns * horizon))
    totals = Totals(model)
    writer: pq.ParquetWriter | None = None
    try:
        for first in range(0, windows, per_part):
            last = min(windows, first + per_part)  # windows [first, last): the rows they read
            rows = slice(first, last + rows_needed - 1)
            part = Series(series.nanoseconds[rows], series.values[rows], series.gap[rows])
            try:
                forecasts = model.forecast_series(part)
            except RequestError as exc:
                raise PermanentError(f"{source}: {exc}") from exc
            table = pa.Table.from_pandas(result_table(model, series, forecasts, first), preserve_index=False)
            totals.add(table)
            writer = writer or pq.ParquetWriter(sink, table.schema)
            writer.write_table(table)
        assert writer is not None
        summary = totals.summary(windows)
        writer.add_key_value_metadata({SUMMARY_KEY: json.dumps(summary)})
    finally:
        if writer is not None:
            writer.close()
    return summary


class Totals:
    """What the parts of a result add up to: rows, and per target the absolute errors' sum and count."""

    def __init__(self, model: ServingModel) -> None:
        self.model = model
        self.rows = 0
        self.error_sums = dict.fromkeys(model.target_columns, 0.0)
        self.error_counts = dict.fromkeys(model.target_columns, 0)

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for target in self.model.target_columns:
            errors = np.abs(table.column(f"{target}_error").to_numpy(zero_copy_only=False))
            known = ~np.isnan(errors)
            self.error_sums[target] += float(errors[known].sum())
            self.error_counts[target] += int(known.sum())

    def summary(self, windows: int) -> dict[str, Any]:
        identity = self.model.identity
        return {
            "rows": self.rows,
            "windows": windows,
            "model_type": identity.model_type,
            "model_version": identity.model_version,
            "run_id": identity.run_id,
            "mean_absolute_error": {
                t: self.error_sums[t] / self.error_counts[t] for t in self.model.target_columns if self.error_counts[t]
            },
        }


def table_summary(table: pd.DataFrame) -> dict[str, Any]:
    """What a whole result table (one written before footers kept it) announces."""
    targets = [c.removesuffix("_error") for c in table.columns if c.endswith("_error")]
    return {
        "rows": len(table),
        "windows": int(table["window_end"].nunique()) if len(table) else 0,
        **{name: str(table[name].iloc[0]) if len(table) else "" for name in ("model_type", "model_version", "run_id")},
        "mean_absolute_error": {
            t: float(table[f"{t}_error"].abs().mean()) for t in targets if table[f"{t}_error"].notna().any()
        },
    }


def result_table(model: ServingModel, series: Series, forecasts: Forecasts, first_window: int = 0) -> pd.DataFrame:
    """One row per (window, forecast step): the window's last observed time, the forecast time and step, and
    per target the forecast, the actual (where the series has an observed, not gap-filled, value) and the error.
    ``forecasts`` are those of the windows from ``first_window`` on (windows count from the series' start)."""
    windows, horizon, _ = forecasts.values.shape
    start = first_window + model.rows_needed - 1
    ends = np.arange(start, start + windows)
    positions = ends[:, None] + np.arange(1, horizon + 1)  # [windows, horizon]: the series row of each step
    observed = positions < len(series.nanoseconds)
    clipped = np.minimum(positions, len(series.nanoseconds) - 1)
    observed &= ~series.gap[clipped]
    columns: dict[str, object] = {
        "window_end": pd.to_datetime(np.repeat(series.nanoseconds[ends], horizon), utc=True),
        "ts": pd.to_datetime(forecasts.nanoseconds.ravel(), utc=True),
        "step": np.tile(np.arange(1, horizon + 1), windows),
    }
    for index, target in enumerate(model.target_columns):
        forecast = forecasts.values[:, :, index]
        actual = np.where(observed, series.values[clipped, model.measured_columns.index(target)], np.nan)
        columns[target] = forecast.ravel()
        columns[f"{target}_actual"] = actual.ravel()
        columns[f"{target}_error"] = (forecast - actual).ravel()
    identity = model.identity
    for name in ("model_type", "model_version", "run_id"):
        columns[name] = pd.Categorical([getattr(identity, name)] * (windows * horizon))
    return pd.DataFrame(columns)


def score_claims(
    settings: InferenceSettings, champion: Callable[[str], ServingModel | None], stop: threading.Event
) -> None:
    """Consume `inference-data` in the replicas' shared scoring group until `stop`; a scorer that cannot start (the
    store unreachable) or a consumer that stalls or fails is started again (`Supervisor`)."""
    scorer: BatchScorer | None = None

    def consume(stop: threading.Event) -> None:
        nonlocal scorer
        scorer = scorer or BatchScorer(settings, champion)
        group = scoring_group(settings)
        ConsumerLoop(
            settings, settings.topic_inference_data, InferenceData, scorer.handle, group_id=group, until=stop
        ).run()

    Supervisor("batch scorer", consume, stop).run()


def scoring_group(settings: InferenceSettings) -> str:
    """One group for all replicas: each claim is scored by one of them."""
    return f"{settings.consumer_group}-scoring"
