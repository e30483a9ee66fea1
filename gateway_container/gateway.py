"""The gateway's service object: what its routes need, built once in the app's lifespan."""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

import pandas as pd
from fastapi import HTTPException, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from flts.config import PipelineConfig
from flts.data.io import DataError, TooManyRows, read_measurements, validate_measurements
from flts.data.metadata import PreprocessingMetadata
from flts.evaluate import decide
from flts.kafka import MessageProducer
from flts.layout import (
    CLAIM_FILE,
    METADATA_FILE,
    champion_pointer_uri,
    config_hash_of_claim,
    decision_uri,
    identifier_prefix,
    processed_uri,
)
from flts.messages import Measurement, ObjectRef
from flts.records import (
    EvalDecision,
    LineageDecision,
    LineageStatus,
    LineageSummary,
    Preprocessed,
    Promotion,
    Record,
    TrainingRun,
)
from flts.settings import GatewaySettings
from flts.storage import ObjectStore, ObjectTooLarge
from flts.tracking import Tracker
from gateway_container.measurements import CsvRows, JsonRows, MeasurementReader, RowBuckets, too_many_rows

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_HASH = re.compile(r"^[0-9a-f]{64}$")
# What a network logs after each epoch (step = epoch), shown while it trains.
PROGRESS_METRICS = ("epoch", "train_loss", "val_loss", "elapsed_seconds")
R = TypeVar("R", bound=Record)


def checked_identifier(identifier: str) -> str:
    if not IDENTIFIER.match(identifier):
        raise HTTPException(422, f"identifier {identifier!r} must match {IDENTIFIER.pattern}")
    return identifier


def checked_config_hash(config_hash: str) -> str:
    if not CONFIG_HASH.match(config_hash):
        raise HTTPException(422, "config_hash must be 64 lowercase hex characters")
    return config_hash


class MeasurementRows(BaseModel):
    """`POST /measurements` as JSON: rows of one series, each {time column: ISO-8601, column: number or null}.

    The schema the API documents; the body itself is parsed as it streams in (`measurements.JsonRows`)."""

    model_config = ConfigDict(extra="forbid")
    identifier: str | None = None
    rows: list[dict[str, str | float | int | None]] = Field(min_length=1)


class Gateway:
    """The store, the producer, the tracker and the pipeline config, and what the routes do with them."""

    def __init__(self, settings: GatewaySettings, config: PipelineConfig) -> None:
        self.settings = settings
        self.config = config
        self.store = ObjectStore(settings)
        self.producer = MessageProducer(settings)
        self.row_buckets = RowBuckets(settings.measurements_rows_per_second, settings.measurements_burst_rows)
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.settings)
        return self._tracker

    def parsed(self, upload: UploadFile, role: str, max_rows: tuple[int, str] | None = None) -> pd.DataFrame:
        """Parse the upload from its spooled file, or answer 413 / 422 with the exact reason. `max_rows`: a cap
        below limits.max_rows and its name; parsing stops one row past it (413), the rest of the file unread."""
        if upload.size is not None and upload.size > self.settings.max_upload_bytes:
            raise HTTPException(
                413, f"{role} file is {upload.size} bytes; the limit is {self.settings.max_upload_bytes}"
            )
        limits, cap_name = self.config.limits, "limits.max_rows"
        if max_rows is not None and max_rows[0] < limits.max_rows:
            limits, cap_name = limits.model_copy(update={"max_rows": max_rows[0]}), max_rows[1]
        upload.file.seek(0)
        try:
            return read_measurements(upload.file, self.config.data, limits)
        except TooManyRows as exc:
            raise HTTPException(
                413, f"{role} file has more than {limits.max_rows} rows ({cap_name}): send them in several files"
            ) from exc
        except DataError as exc:
            raise HTTPException(422, f"{role} file {upload.filename!r}: {exc}") from exc

    def measurement_reader(self, content_type: str) -> MeasurementReader:
        """What reads a body of rows (CSV, or JSON {"identifier", "rows": [{column: cell}]}) as it streams in,
        capped at MEASUREMENTS_MAX_ROWS; 415 for another content type, before a byte is read."""
        cap = self.settings.measurements_max_rows
        if content_type.startswith("text/csv"):
            return CsvRows(cap)
        if content_type.startswith("application/json"):
            return JsonRows(cap)
        raise HTTPException(415, f"send rows as text/csv or application/json, not {content_type or 'nothing'}")

    def measurements_of(self, reader: MeasurementReader, identifier: str | None) -> list[Measurement]:
        """The rows a reader read, checked as an upload is (422 with the row and column)."""
        data, named = reader.finish()
        cap = self.settings.measurements_max_rows
        limits = self.config.limits.model_copy(update={"max_rows": min(cap, self.config.limits.max_rows)})
        try:
            frame = read_measurements(data, self.config.data, limits)
        except DataError as exc:
            if "(limits.max_rows)" in str(exc):  # here the cap: rows the reader could not count (lone \r ends)
                raise too_many_rows(cap) from exc
            raise HTTPException(422, f"rows: {exc}") from exc
        identifier = self.resolved_identifier(identifier or named, frame)
        time_column = self.config.data.time_column
        columns = [c for c in frame.columns if c not in (time_column, self.config.data.identifier_column)]
        cells = frame[columns].astype(object).where(frame[columns].notna(), None)
        return [
            Measurement(identifier=identifier, ts=ts, values=dict(zip(columns, row, strict=True)))
            for ts, row in zip(frame[time_column], cells.itertuples(index=False, name=None), strict=True)
        ]

    def measurements(self, body: bytes, content_type: str, identifier: str | None) -> list[Measurement]:
        """A whole body of rows at once: what `POST /measurements` does a chunk at a time."""
        reader = self.measurement_reader(content_type)
        reader.feed(body)
        return self.measurements_of(reader, identifier)

    def validated(self, train: UploadFile, test: UploadFile | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        train_frame = self.parsed(train, "train")
        test_frame = self.parsed(test, "test") if test is not None else None
        try:
            validate_measurements(train_frame, self.config, test_frame)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from exc
        return train_frame, test_frame

    def check_store(self) -> None:
        """Raise unless the datasets bucket answers (readiness)."""
        self.store.check_bucket(self.settings.bucket_datasets)

    def json_if_exists(self, uri: str) -> dict[str, Any] | None:
        return self.store.get_json(uri) if self.store.exists(uri) else None

    def record_if_exists(self, kind: type[R], uri: str) -> R | None:
        """Eval's record at `uri`, when written (flts.records: an unreadable one is refused, naming the field)."""
        stored = self.json_if_exists(uri)
        return None if stored is None else kind.parse(stored, uri)

    def champion_pointer(self, identifier: str, config_hash: str) -> Promotion | None:
        return self.record_if_exists(Promotion, champion_pointer_uri(self.settings, identifier, config_hash))

    def eval_decision(self, identifier: str, config_hash: str) -> EvalDecision | None:
        return self.record_if_exists(EvalDecision, decision_uri(self.settings, identifier, config_hash))

    def identifier_in(self, frame: pd.DataFrame) -> str | None:
        """The series a file names in its identifier column (422 when it names several)."""
        column = self.config.data.identifier_column
        if column and column in frame.columns:
            values = frame[column].dropna().astype(str).unique()
            if len(values) > 1:
                raise HTTPException(
                    422, f"the file holds {len(values)} series in column {column!r}; send one series per file"
                )
            return str(values[0]) if len(values) else None
        return None

    def resolved_identifier(self, given: str | None, frame: pd.DataFrame) -> str:
        """The series rows belong to: the one given, else the file's, else "global" (422 unless well-formed)."""
        return checked_identifier(given or self.identifier_in(frame) or "global")

    def lineages(self, identifier: str, limit: int | None = None) -> list[LineageSummary]:
        """An identifier's preprocessed lineages, newest first, each with eval's recorded outcome; at most `limit`
        (only their decisions are read: a page listing many identifiers reads a few records of each)."""
        objects = self.store.list(self.settings.bucket_processed, identifier_prefix(identifier))
        claims = sorted((o for o in objects if o["Key"].endswith(f"/{CLAIM_FILE}")), key=lambda o: o["LastModified"])
        lineages = []
        for claim in list(reversed(claims))[:limit]:
            config_hash = config_hash_of_claim(claim["Key"])
            recorded = self.eval_decision(identifier, config_hash)
            lineages.append(
                LineageSummary(
                    config_hash=config_hash,
                    preprocessed_at=claim["LastModified"].isoformat(),
                    outcome=recorded.outcome if recorded else None,
                    reason=recorded.reason if recorded else None,
                )
            )
        return lineages

    def store_upload(self, upload: UploadFile, key: str, rows: int) -> ObjectRef:
        upload.file.seek(0)
        uri = f"s3://{self.settings.bucket_datasets}/{key}"
        try:
            stored = self.store.put_stream(uri, upload.file, max_bytes=self.settings.max_upload_bytes)
        except ObjectTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        return ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=rows)

    def lineage_status(self, config_hash: str, identifier: str) -> LineageStatus:
        """Every stage of a lineage: preprocessing, each model's training, the leaderboard, the champion."""
        settings = self.settings
        metadata_uri = processed_uri(settings, identifier, config_hash, METADATA_FILE)
        preprocessed = None
        if (stored := self.json_if_exists(metadata_uri)) is not None:
            metadata = PreprocessingMetadata.parse(stored, metadata_uri)
            preprocessed = Preprocessed(
                rows=metadata.rows,
                feature_columns=metadata.feature_columns,
                target_columns=metadata.target_columns,
                frequency=metadata.frequency,
                sampling=metadata.config.preprocessing.sample.model_dump(mode="json"),
                metadata_uri=metadata_uri,
                # The networks' epoch budget (early stopping may end a model sooner).
                max_epochs=metadata.config.models.recurrent.epochs,
            )
        # Only this identifier's runs: a config_hash of another tenant shows nothing of theirs.
        runs = [r for r in self.tracker.lineage_runs(config_hash) if r.identifier == identifier]
        decision = decide(runs, self.config.evaluation, int(time.time() * 1000))
        champion = self.champion_pointer(identifier, config_hash)
        recorded = self.eval_decision(identifier, config_hash)
        if preprocessed is None and not runs:
            raise HTTPException(404, f"no lineage {config_hash} for identifier {identifier!r} (yet)")
        return LineageStatus(
            config_hash=config_hash,
            identifier=identifier,
            preprocessed=preprocessed,
            training=[
                TrainingRun(
                    model_type=r.model_type,
                    run_id=r.run_id,
                    status=r.status,
                    error=r.error,
                    started_at_ms=r.start_time_ms,
                    seconds=round((r.end_time_ms - r.start_time_ms) / 1000, 1) if r.end_time_ms else None,
                    metrics={k: v for k, v in r.metrics.items() if k.startswith("test_") and "__" not in k},
                    # The latest epoch a network has logged while it trains (MLflow metrics, step = epoch).
                    progress={k: r.metrics[k] for k in PROGRESS_METRICS if k in r.metrics},
                )
                for r in runs
            ],
            decision=LineageDecision(
                ready=decision.ready,
                reason=decision.reason,
                outcome=recorded.outcome if recorded else None,
                column_winners=decision.column_winners,
                column_composite=decision.column_composite(self.config.evaluation.score_weights),
            ),
            leaderboard=decision.leaderboard_records(),
            champion=champion,
        )
