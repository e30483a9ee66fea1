"""One training job for any model type: the contract every trainer (GRU, LSTM, Prophet, baselines) shares.

read the claim's splits -> fit -> score on the test windows -> log to MLflow -> register ->
publish RUNNING, then SUCCESS or FAILED on `model-training`. The same claim twice yields one
MLflow run: a finished run of the same lineage and model type is announced again, not retrained.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flts.backtest import TEST_FORECAST_ARTIFACT, forecast_frame, to_parquet_bytes
from flts.config import PipelineConfig
from flts.data.metadata import MetadataError, PreprocessingMetadata
from flts.data.windows import Windows, make_windows
from flts.kafka import MessageProducer, PermanentError
from flts.layout import PREPROCESSING_FILE
from flts.messages import ModelTraining, ObjectRef, TrainingData
from flts.models.base import Forecaster, TrainedForecaster, WindowLayout
from flts.observability import log_context
from flts.outages import is_outage
from flts.scoring import forecast_metrics, in_sample_naive_mae
from flts.settings import CommonSettings
from flts.storage import ObjectNotFound, ObjectStore, sha256_bytes
from flts.tracking import TAG_CONFIG_HASH, TAG_MODEL_TYPE, DatasetUsed, RunSummary, Tracker

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
# How often a training run beats its heartbeat (evaluation.orphan_after_seconds must be well above it).
HEARTBEAT_SECONDS = 30.0
# A RUNNING run beaten within this long has a live trainer: another owner of its claim waits for it.
LIVE_BEAT_SECONDS = 3 * HEARTBEAT_SECONDS
OTHER_TRAINER_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class LineageData:
    """A training-data claim resolved: the scaled splits, their windows and the preprocessing metadata."""

    claim: TrainingData
    frames: dict[str, pd.DataFrame]
    windows: dict[str, Windows]
    metadata: PreprocessingMetadata
    config: PipelineConfig

    @property
    def layout(self) -> WindowLayout:
        windows = self.config.windows
        return WindowLayout.build(
            self.claim.feature_columns, self.claim.target_columns, windows.input_seq_len, windows.output_seq_len
        )


def read_parquet(store: ObjectStore, ref: ObjectRef) -> pd.DataFrame:
    data = store.get_bytes(ref.uri)
    if ref.sha256 and ref.sha256 != sha256_bytes(data):
        raise PermanentError(f"{ref.uri} does not match the sha256 in the claim")
    return pd.read_parquet(io.BytesIO(data))


def load_lineage_data(store: ObjectStore, claim: TrainingData) -> LineageData:
    """Fetch every object behind the claim; a missing or altered object is a permanent failure."""
    try:
        frames = {
            "train": read_parquet(store, claim.train),
            "validation": read_parquet(store, claim.validation),
            "test": read_parquet(store, claim.test),
        }
        stored = store.get_json(claim.metadata.uri)
    except ObjectNotFound as exc:
        raise PermanentError(f"object behind the claim is missing: {exc}") from exc
    try:
        metadata = PreprocessingMetadata.parse(stored, claim.metadata.uri)
    except MetadataError as exc:
        raise PermanentError(str(exc)) from exc
    config = metadata.config
    windows = {
        split: make_windows(
            frame,
            claim.time_column,
            claim.feature_columns,
            claim.target_columns,
            config.windows.input_seq_len,
            config.windows.output_seq_len,
        )
        for split, frame in frames.items()
    }
    if len(windows["test"]) == 0 or len(windows["train"]) == 0:
        raise PermanentError(
            f"not enough rows for windows of {config.windows.input_seq_len}+{config.windows.output_seq_len}: "
            f"train={len(frames['train'])}, test={len(frames['test'])}"
        )
    return LineageData(claim, frames, windows, metadata, config)


def score(forecaster: Forecaster, data: LineageData) -> tuple[dict[str, float], pd.DataFrame]:
    """Test metrics on windows never seen in training or early stopping, scaled and original scale; the
    scaled validation metrics eval chooses each target column's model by (`validation_<metric>__<target>`);
    and the test forecasts beside the actual values (original scale), which the run keeps for the plots."""
    test = data.windows["test"]
    predictions = forecaster.predict(test.inputs, test.target_times)
    scaler = data.metadata.fitted_scaler
    targets = data.claim.target_columns

    def inverse(values: np.ndarray) -> np.ndarray:
        return scaler.inverse(values, targets)

    naive_mae = in_sample_naive_mae(data.frames["train"][targets].to_numpy(np.float64))
    metrics = forecast_metrics(test.targets, predictions, targets, inverse=inverse, naive_mae=naive_mae)
    validation = data.windows["validation"]
    if len(validation):
        forecast = forecaster.predict(validation.inputs, validation.target_times)
        metrics |= forecast_metrics(validation.targets, forecast, targets, prefix="validation")
    forecasts = forecast_frame(test.target_times, inverse(predictions), inverse(test.targets), list(targets))
    return metrics, forecasts


Fit = Callable[[LineageData, EpochCallback], tuple[TrainedForecaster, dict[str, Any]]]


class TrainingJob:
    """Trains one or more model types on each training-data claim and reports on `model-training`.

    The claim's data is read once per claim, and only when some model type still needs training.
    """

    def __init__(self, settings: CommonSettings, fits: dict[str, Fit]) -> None:
        self.settings = settings
        self.fits = fits
        self.store = ObjectStore(settings)
        self.tracker = Tracker(settings)
        self.producer = MessageProducer(settings)
        self._running: set[str] = set()  # MLflow runs being trained now
        self._started: set[str] = set()  # every run this job started (one an outage interrupted is dead)
        self._abandoned = threading.Event()

    def __call__(self, claim: TrainingData) -> None:
        self.handle(claim)

    def abandon(self, reason: str) -> None:
        """The process stops mid-training (SIGTERM): close the runs in progress as KILLED, not FAILED, and
        register nothing more. The claim stays uncommitted, so the group's next member trains it again."""
        self._abandoned.set()
        for run_id in list(self._running):
            try:
                self.tracker.fail_run(run_id, reason, status="KILLED")
                log.warning("training run closed as KILLED", extra={"run_id": run_id, "reason": reason})
            except Exception:
                log.warning("could not close the run; eval closes it once its heartbeat is stale", exc_info=True)

    def handle(self, claim: TrainingData) -> None:
        data: LineageData | None = None
        for model_type, fit in self.fits.items():
            if self._abandoned.is_set():
                return
            with log_context(config_hash=claim.config_hash, model_type=model_type, identifier=claim.identifier):
                finished = None if claim.force else self._finished_or_wait(claim.config_hash, model_type)
                if finished is not None:
                    log.info(
                        "already trained for this lineage; announcing the run again",
                        extra={"run_id": finished.run_id},
                    )
                    version = self.tracker.model_version_of_run(claim.identifier, finished.run_id)
                    self._announce(claim, model_type, "SUCCESS", finished.run_id, finished.metrics, version)
                    continue
                data = data or load_lineage_data(self.store, claim)
                self._train_one(model_type, fit, data)

    def _finished_or_wait(self, config_hash: str, model_type: str) -> RunSummary | None:
        """The lineage's finished run of this model type, if any. While another trainer's run of it is alive (the
        claim's partition moved mid-training: a rebalance, a rolling upgrade), wait for that run instead of training
        a second one: one MLflow run and one model version per claim and model type. A run whose heartbeat stopped
        (its trainer died) is not waited for."""
        while True:
            runs = self.tracker.lineage_runs(config_hash, model_type)
            finished = next((run for run in runs if run.status == "FINISHED"), None)
            now_ms = int(time.time() * 1000)
            live = [
                run
                for run in runs
                if run.status == "RUNNING"
                and run.run_id not in self._started
                and now_ms - (run.heartbeat_ms or run.start_time_ms) < LIVE_BEAT_SECONDS * 1000
            ]
            if finished is not None or not live:
                return finished
            log.info("another trainer is training this lineage; waiting for its run", extra={"run_id": live[0].run_id})
            self._abandoned.wait(OTHER_TRAINER_POLL_SECONDS)

    def _train_one(self, model_type: str, fit: Fit, data: LineageData) -> None:
        claim = data.claim
        uploaded_at_ms = int(claim.uploaded_at.timestamp() * 1000) if claim.uploaded_at else None
        run_id = self.tracker.start_run(
            claim.config_hash, model_type, claim.identifier, claim.dataset_id, uploaded_at_ms
        )
        self._started.add(run_id)
        with log_context(run_id=run_id), self._heartbeat(run_id):
            self._announce(claim, model_type, "RUNNING", run_id)
            self._running.add(run_id)
            try:
                metrics = self._train_and_log(model_type, fit, data, run_id)
            except Exception as exc:
                if is_outage(exc):
                    self._interrupted(run_id, exc)
                    raise  # not the model's fault: the consumer waits the outage out and trains again
                log.exception("training failed")
                self.tracker.fail_run(run_id, repr(exc))
                self._announce(claim, model_type, "FAILED", run_id, error=repr(exc)[:2000])
                return
            finally:
                self._running.discard(run_id)
            if self._abandoned.is_set():
                return  # closed as KILLED while it trained: registering it now would race the next owner
            version = self.tracker.register(
                run_id,
                claim.identifier,
                {TAG_CONFIG_HASH: claim.config_hash, TAG_MODEL_TYPE: model_type},
                f"{model_type} trained on lineage {claim.config_hash[:12]} (dataset {claim.dataset_id}); "
                f"test RMSE {metrics.get('test_rmse', float('nan')):.4g} (scaled), run {run_id}",
            )
            self.tracker.finish_run(run_id)
            log.info("training finished", extra={"model_version": version, "test_rmse": metrics.get("test_rmse")})
            self._announce(claim, model_type, "SUCCESS", run_id, metrics, version)

    def _interrupted(self, run_id: str, exc: Exception) -> None:
        """Close a run an outage interrupted as KILLED (not FAILED), if MLflow answers; else the heartbeat
        check closes it."""
        try:
            self.tracker.fail_run(run_id, f"interrupted by an outage, trained again: {exc!r}"[:2000], status="KILLED")
        except Exception:
            log.warning("could not close the interrupted run; eval closes it once its heartbeat is stale")

    @contextmanager
    def _heartbeat(self, run_id: str) -> Iterator[None]:
        """Beat the run's heartbeat while it trains: eval closes a RUNNING run whose beat stops."""
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.tracker.heartbeat(run_id)
                except Exception:
                    log.warning("heartbeat not recorded; retrying", exc_info=True)
                if stop.wait(HEARTBEAT_SECONDS):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _train_and_log(self, model_type: str, fit: Fit, data: LineageData, run_id: str) -> dict[str, float]:
        started = time.monotonic()

        def on_epoch(epoch: int, values: dict[str, float]) -> None:
            """Each epoch's record (epoch, losses, its seconds) and the time since fitting began, as it
            happens: step = epoch, so the page and the CLI show progress while the model trains."""
            record = {**values, "elapsed_seconds": time.monotonic() - started}
            self.tracker.log(run_id, record, step=epoch)
            log.info("epoch done", extra={"epoch": epoch, **record})

        forecaster, params = fit(data, on_epoch)
        fit_seconds = time.monotonic() - started
        metrics, forecasts = score(forecaster, data)
        metrics["fit_seconds"] = fit_seconds
        claim = data.claim
        all_params = {
            "model_type": model_type,
            **{f"window.{k}": v for k, v in data.config.windows.model_dump().items()},
            **params,
            "features": len(claim.feature_columns),
            "targets": len(claim.target_columns),
            # What the columns are, not only how many (the run page names what the model forecasts, from what).
            "feature_columns": ",".join(claim.feature_columns),
            "target_columns": ",".join(claim.target_columns),
            "train_windows": len(data.windows["train"]),
            "test_windows": len(data.windows["test"]),
        }
        self.tracker.log(run_id, {k: v for k, v in metrics.items() if np.isfinite(v)}, params=all_params)
        splits = {"train": claim.train, "validation": claim.validation, "test": claim.test}
        self.tracker.log_datasets(
            run_id,
            [
                DatasetUsed(f"{claim.identifier}/{claim.dataset_id}/{split}", ref.uri, ref.sha256, len(frame), split)
                for split, ref in splits.items()
                for frame in [data.frames[split]]
            ],
        )
        with tempfile.TemporaryDirectory(prefix="flts-model-") as tmp:
            forecaster.save(Path(tmp))
            (Path(tmp) / PREPROCESSING_FILE).write_text(json.dumps(data.metadata.to_json(), indent=2))
            self.tracker.log_model(run_id, Path(tmp))
        self.tracker.log_file(run_id, TEST_FORECAST_ARTIFACT, to_parquet_bytes(forecasts))
        return metrics

    def _announce(
        self,
        claim: TrainingData,
        model_type: str,
        status: str,
        run_id: str,
        metrics: dict[str, float] | None = None,
        version: str | None = None,
        error: str | None = None,
    ) -> None:
        finite = {k: v for k, v in (metrics or {}).items() if np.isfinite(v) and "__" not in k}
        self.producer.publish(
            self.settings.topic_model_training,
            ModelTraining(
                config_hash=claim.config_hash,
                identifier=claim.identifier,
                model_type=model_type,
                status=status,
                run_id=run_id,
                model_version=version,
                metrics=finite,
                error=error,
            ),
        )
