"""The gateway's service object: what its routes need, built once in the app's lifespan."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from fastapi import HTTPException, UploadFile

from flts.config import GatewaySettings, PipelineConfig
from flts.data.io import DataError, read_measurements, validate_measurements
from flts.data.metadata import PreprocessingMetadata
from flts.evaluate import decide
from flts.kafka import MessageProducer
from flts.layout import METADATA_FILE, champion_pointer_uri, decision_uri, processed_uri
from flts.messages import ObjectRef
from flts.storage import ObjectStore, ObjectTooLarge
from flts.tracking import Tracker


class Gateway:
    """The store, the producer, the tracker and the pipeline config, and what the routes do with them."""

    def __init__(self, settings: GatewaySettings, config: PipelineConfig) -> None:
        self.settings = settings
        self.config = config
        self.store = ObjectStore(settings)
        self.producer = MessageProducer(settings)
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.settings)
        return self._tracker

    def parsed(self, upload: UploadFile, role: str) -> pd.DataFrame:
        """Parse the upload from its spooled file, or answer 413 / 422 with the exact reason."""
        if upload.size is not None and upload.size > self.settings.max_upload_bytes:
            raise HTTPException(
                413, f"{role} file is {upload.size} bytes; the limit is {self.settings.max_upload_bytes}"
            )
        upload.file.seek(0)
        try:
            return read_measurements(upload.file, self.config.data, self.config.limits)
        except DataError as exc:
            raise HTTPException(422, f"{role} file {upload.filename!r}: {exc}") from exc

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

    def identifier_in(self, frame: pd.DataFrame) -> str | None:
        column = self.config.data.identifier_column
        if column and column in frame.columns:
            values = frame[column].dropna().astype(str).unique()
            return str(values[0]) if len(values) else None
        return None

    def store_upload(self, upload: UploadFile, key: str, rows: int) -> ObjectRef:
        upload.file.seek(0)
        uri = f"s3://{self.settings.bucket_datasets}/{key}"
        try:
            stored = self.store.put_stream(uri, upload.file, max_bytes=self.settings.max_upload_bytes)
        except ObjectTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        return ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=rows)

    def lineage_status(self, config_hash: str, identifier: str) -> dict[str, Any]:
        """Every stage of a lineage: preprocessing, each model's training, the leaderboard, the champion."""
        settings = self.settings
        metadata_uri = processed_uri(settings, identifier, config_hash, METADATA_FILE)
        preprocessed = None
        if (stored := self.json_if_exists(metadata_uri)) is not None:
            metadata = PreprocessingMetadata.parse(stored, metadata_uri)
            preprocessed = {
                "rows": metadata.rows,
                "feature_columns": metadata.feature_columns,
                "target_columns": metadata.target_columns,
                "frequency": metadata.frequency,
                "sampling": metadata.config.preprocessing.sample.model_dump(mode="json"),
                "metadata_uri": metadata_uri,
            }
        # Only this identifier's runs: a config_hash of another tenant shows nothing of theirs.
        runs = [r for r in self.tracker.lineage_runs(config_hash) if r.identifier == identifier]
        decision = decide(runs, self.config.evaluation, int(time.time() * 1000))
        champion = self.json_if_exists(champion_pointer_uri(settings, identifier, config_hash))
        recorded = self.json_if_exists(decision_uri(settings, identifier, config_hash))
        if preprocessed is None and not runs:
            raise HTTPException(404, f"no lineage {config_hash} for identifier {identifier!r} (yet)")
        return {
            "config_hash": config_hash,
            "identifier": identifier,
            "preprocessed": preprocessed,
            "training": [
                {
                    "model_type": r.model_type,
                    "run_id": r.run_id,
                    "status": r.status,
                    "error": r.error,
                    "started_at_ms": r.start_time_ms,
                    "seconds": round((r.end_time_ms - r.start_time_ms) / 1000, 1) if r.end_time_ms else None,
                    "metrics": {k: v for k, v in r.metrics.items() if k.startswith("test_") and "__" not in k},
                    # The latest epoch a network has logged while it trains (MLflow metrics, step = epoch).
                    "progress": {k: r.metrics[k] for k in ("epoch", "train_loss", "val_loss") if k in r.metrics},
                }
                for r in runs
            ],
            # outcome (eval's record): promoted, superseded (a lineage uploaded later holds the champion), no_winner.
            "decision": {
                "ready": decision.ready,
                "reason": decision.reason,
                "outcome": (recorded or {}).get("outcome"),
            },
            "leaderboard": decision.leaderboard_records(),
            "champion": champion,
        }
