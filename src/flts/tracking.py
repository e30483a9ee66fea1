"""MLflow helpers: the experiment, run lookup by lineage tags, the model registry and its `champion` alias.

MLflow is the source of truth for what has been trained: trainers tag every run with
``config_hash``, ``model_type`` and ``identifier``, and eval derives its state from those
tags, so a restarted eval (or one that missed a message) still reaches a decision.
Artifacts travel through the tracking server's proxy, so clients need no S3 credentials.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from flts.layout import MODEL_ARTIFACT_PATH
from flts.settings import CommonSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
TAG_CONFIG_HASH = "flts.config_hash"
TAG_MODEL_TYPE = "flts.model_type"
TAG_IDENTIFIER = "flts.identifier"
TAG_DATASET = "flts.dataset_id"
TAG_ERROR = "flts.error"
# When the lineage's data was uploaded (epoch ms): orders an identifier's lineages for promotion.
TAG_UPLOADED_AT = "flts.uploaded_at_ms"
# The registry is searched a page at a time: MLflow returns at most this many registered models per call.
REGISTRY_PAGE_SIZE = 100
# The trainer beats this while it trains (epoch ms); a RUNNING run whose beat stopped lost its process.
TAG_HEARTBEAT = "flts.heartbeat_ms"
# The MLflow UI shows a dataset's context (the split) from this input tag (what mlflow.log_input sets).
DATASET_CONTEXT_TAG = "mlflow.data.context"
# MLflow keeps at most 36 characters of a dataset's digest.
DATASET_DIGEST_LENGTH = 36


@dataclass(frozen=True)
class DatasetUsed:
    """One split a run read, as the MLflow UI lists it under "Datasets used": its name, where it lives and its
    sha256 (the claim's), its rows, and the split as the context."""

    name: str
    uri: str
    sha256: str
    rows: int
    context: str


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    model_type: str
    identifier: str
    status: str
    metrics: dict[str, float]
    start_time_ms: int
    end_time_ms: int | None
    error: str | None
    config_hash: str = ""
    uploaded_at_ms: int | None = None
    heartbeat_ms: int | None = None

    @property
    def lineage_order(self) -> int:
        """Upload time of the run's lineage; runs from before the tag existed fall back to their start."""
        return self.uploaded_at_ms if self.uploaded_at_ms is not None else self.start_time_ms


def registered_model_name(settings: CommonSettings, identifier: str) -> str:
    """One registered model per identifier: each identifier has its own champion."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", identifier)
    return f"{settings.registered_model_prefix}-{safe}"


class Tracker:
    def __init__(self, settings: CommonSettings) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.settings = settings
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        self._client: MlflowClient = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            experiment = self._client.get_experiment_by_name(self.settings.mlflow_experiment)
            if experiment is None:
                try:
                    self._experiment_id = self._client.create_experiment(self.settings.mlflow_experiment)
                except MlflowException:
                    experiment = self._client.get_experiment_by_name(self.settings.mlflow_experiment)
                    assert experiment is not None
                    self._experiment_id = experiment.experiment_id
            else:
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def start_run(
        self, config_hash: str, model_type: str, identifier: str, dataset_id: str, uploaded_at_ms: int | None = None
    ) -> str:
        tags = {TAG_CONFIG_HASH: config_hash, TAG_MODEL_TYPE: model_type, TAG_IDENTIFIER: identifier}
        tags[TAG_DATASET] = dataset_id
        if uploaded_at_ms is not None:
            tags[TAG_UPLOADED_AT] = str(uploaded_at_ms)
        run = self._client.create_run(
            self.experiment_id, run_name=f"{model_type.lower()}-{config_hash[:12]}", tags=tags
        )
        return run.info.run_id

    def lineage_runs(self, config_hash: str, model_type: str | None = None) -> list[RunSummary]:
        """Every run of a lineage, newest first."""
        query = f"tags.`{TAG_CONFIG_HASH}` = '{config_hash}'"
        if model_type:
            query += f" and tags.`{TAG_MODEL_TYPE}` = '{model_type}'"
        runs = self._client.search_runs(
            [self.experiment_id],
            filter_string=query,
            order_by=["attributes.start_time DESC"],
            max_results=500,
        )
        return [_summary(run) for run in runs]

    def recent_lineages(self, max_runs: int = 1000) -> dict[str, list[RunSummary]]:
        """Runs grouped by config_hash, for eval's sweep after a restart."""
        runs = self._client.search_runs(
            [self.experiment_id], order_by=["attributes.start_time DESC"], max_results=max_runs
        )
        grouped: dict[str, list[RunSummary]] = {}
        for run in runs:
            config_hash = run.data.tags.get(TAG_CONFIG_HASH)
            if config_hash:
                grouped.setdefault(config_hash, []).append(_summary(run))
        return grouped

    def log(
        self, run_id: str, metrics: dict[str, float], step: int = 0, params: dict[str, object] | None = None
    ) -> None:
        """Metrics at one step (an epoch, or 0 for the final scores) and optionally params, in one call."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
        )

    def log_datasets(self, run_id: str, datasets: list[DatasetUsed]) -> None:
        """Record the splits the run read as its dataset inputs (the UI's "Datasets used")."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(
                    name=used.name,
                    digest=used.sha256[:DATASET_DIGEST_LENGTH],
                    source_type="s3",
                    source=json.dumps({"uri": used.uri}),
                    profile=json.dumps({"num_rows": used.rows}),
                ),
                tags=[InputTag(DATASET_CONTEXT_TAG, used.context)],
            )
            for used in datasets
        ]
        self._client.log_inputs(run_id, datasets=inputs)

    def log_model(self, run_id: str, directory: Path) -> None:
        """Upload a model bundle (the forecaster and its preprocessing) as the run's model artifact."""
        self._client.log_artifacts(run_id, str(directory), MODEL_ARTIFACT_PATH)

    def log_file(self, run_id: str, artifact_path: str, content: bytes) -> None:
        """Upload ``content`` as the run's artifact file ``artifact_path`` (e.g. `backtest.TEST_FORECAST_ARTIFACT`)."""
        relative = PurePosixPath(artifact_path)
        with tempfile.TemporaryDirectory(prefix="flts-artifact-") as tmp:
            path = Path(tmp) / relative.name
            path.write_bytes(content)
            self._client.log_artifact(run_id, str(path), str(relative.parent) if relative.parent.parts else None)

    def finish_run(self, run_id: str) -> None:
        self._client.set_terminated(run_id, status="FINISHED")

    def fail_run(self, run_id: str, error: str, status: str = "FAILED") -> None:
        self._client.set_tag(run_id, TAG_ERROR, error[:4000])
        self._client.set_terminated(run_id, status=status)

    def heartbeat(self, run_id: str) -> None:
        self._client.set_tag(run_id, TAG_HEARTBEAT, str(int(time.time() * 1000)))

    def register(self, run_id: str, identifier: str, tags: dict[str, str], description: str | None = None) -> str:
        """Register the run's model as a new version of the identifier's registered model (described, for the
        MLflow UI, by what the identifier's model is and, with ``description``, by what this version is)."""
        from mlflow.exceptions import MlflowException

        name = registered_model_name(self.settings, identifier)
        try:
            self._client.create_registered_model(
                name,
                description=f"The models FLTS trained for the series '{identifier}', one version per training run. "
                f"The alias '{CHAMPION_ALIAS}' names the version inference serves (eval moves it).",
            )
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        run = self._client.get_run(run_id)
        version = self._client.create_model_version(
            name, f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}", run_id=run_id, tags=tags, description=description
        )
        return str(version.version)

    def model_versions(self, identifier: str, run_id: str | None = None) -> list[str]:
        """The identifier's registered model versions; only those of one run's model when `run_id` is given."""
        name = registered_model_name(self.settings, identifier)
        query = f"name = '{name}'" + (f" and run_id = '{run_id}'" if run_id else "")
        return [str(version.version) for version in self._client.search_model_versions(query)]

    def model_version_of_run(self, identifier: str, run_id: str) -> str | None:
        versions = self.model_versions(identifier, run_id)
        return versions[0] if versions else None

    def registered_identifiers(self, page_size: int = REGISTRY_PAGE_SIZE) -> list[str]:
        """Every identifier with a registered model (not all of them have a champion yet), a page at a time."""
        prefix = f"{self.settings.registered_model_prefix}-"
        found: list[str] = []
        token: str | None = None
        while True:
            page = self._client.search_registered_models(
                f"name LIKE '{prefix}%'", max_results=page_size, page_token=token
            )
            found += [registered.name.removeprefix(prefix) for registered in page]
            token = page.token
            if not token:
                return found

    def run_summary(self, run_id: str) -> RunSummary:
        return _summary(self._client.get_run(run_id))

    def champion(self, identifier: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_model_version_by_alias(
                registered_model_name(self.settings, identifier), CHAMPION_ALIAS
            )
        except MlflowException:
            return None

    def set_champion(self, identifier: str, version: str) -> None:
        self._client.set_registered_model_alias(
            registered_model_name(self.settings, identifier), CHAMPION_ALIAS, version
        )

    def download_model(self, run_id: str, destination: str) -> str:
        return self.download(run_id, MODEL_ARTIFACT_PATH, destination)

    def download(self, run_id: str, artifact_path: str, destination: str) -> str:
        """One artifact (file or directory) of a run into ``destination``; returns its local path."""
        from mlflow.artifacts import download_artifacts

        return download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=destination,
            tracking_uri=self.settings.mlflow_tracking_uri,
        )


def _summary(run: Run) -> RunSummary:
    return RunSummary(
        run_id=run.info.run_id,
        model_type=run.data.tags.get(TAG_MODEL_TYPE, "?"),
        identifier=run.data.tags.get(TAG_IDENTIFIER, "global"),
        status=run.info.status,
        metrics=dict(run.data.metrics),
        start_time_ms=run.info.start_time,
        end_time_ms=run.info.end_time,
        error=run.data.tags.get(TAG_ERROR),
        config_hash=run.data.tags.get(TAG_CONFIG_HASH, ""),
        uploaded_at_ms=_int_tag(run, TAG_UPLOADED_AT),
        heartbeat_ms=_int_tag(run, TAG_HEARTBEAT),
    )


def _int_tag(run: Run, tag: str) -> int | None:
    value = run.data.tags.get(tag, "")
    return int(value) if value.isdigit() else None
