"""MLflow as a person opening its UI uses it, after the e2e lineage is promoted: the `mlflow` client against the
stack's MLflow server, not FLTS's Tracker. Each identifier's registered model, its `champion` alias, the run
behind it with its params, metrics, datasets and artifacts, and every run of the lineage with the metrics the
status page's leaderboard shows."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from flts.backtest import TEST_FORECAST_ARTIFACT
from flts.layout import MODEL_ARTIFACT_PATH, MODEL_FILE, PREPROCESSING_FILE
from flts.tracking import CHAMPION_ALIAS, DATASET_CONTEXT_TAG, registered_model_name
from gateway_container.ui import LEADERBOARD_METRICS

pytestmark = pytest.mark.e2e

# What every run's page shows, whatever the model: what it is, its windows, the data's columns and size.
COMMON_PARAMS = {
    "model_type",
    "window.input_seq_len",
    "window.output_seq_len",
    "features",
    "targets",
    "feature_columns",
    "target_columns",
    "train_windows",
    "test_windows",
}
# How each model type was fitted: its hyperparameters, and what the fit chose (epochs run, each column's model).
FIT_PARAMS = {
    "GRU": ("recurrent.hidden_size", "epochs_run"),
    "LSTM": ("recurrent.hidden_size", "epochs_run"),
    "LIGHTGBM": ("lightgbm.num_leaves", "lightgbm.max_rounds"),
    "AUTOETS": ("statistical.max_fit_rows", "column."),
    "AUTOARIMA": ("statistical.max_fit_rows", "column."),
    "THETA": ("statistical.max_fit_rows", "column."),
    "SEASONAL_NAIVE": ("season_length_steps",),
    "PERSISTENCE": (),
}
SPLITS = {"train", "validation", "test"}


@pytest.fixture(scope="module")
def mlflow(first_run, settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def _artifacts(mlflow: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {item.path for item in mlflow.list_artifacts(run_id, path)}


def _check_run(mlflow: MlflowClient, run: Run, lineage: dict, settings) -> None:
    """A finished run's page: its params, the leaderboard's metrics overall and per column (and the networks'
    curves, one point an epoch), the splits it read, its artifacts (the model bundle, the test forecasts)."""
    model_type, run_id = run.data.tags["flts.model_type"], run.info.run_id
    assert run.info.status == "FINISHED", (model_type, run.info.status)
    params = run.data.params
    assert set(params) >= COMMON_PARAMS, (model_type, COMMON_PARAMS - set(params))
    targets = lineage["preprocessed"]["target_columns"]
    assert (params["model_type"], params["target_columns"].split(",")) == (model_type, targets)
    for wanted in FIT_PARAMS[model_type]:
        assert any(name.startswith(wanted) for name in params), (model_type, wanted, sorted(params))
    columns = ["", *(f"__{target}" for target in targets)]
    shown = {f"test_{metric}{column}" for metric in LEADERBOARD_METRICS for column in columns}
    assert not shown - set(run.data.metrics), (model_type, sorted(shown - set(run.data.metrics)))
    if "epochs_run" in params:
        for curve in ("train_loss", "val_loss"):
            steps = [point.step for point in mlflow.get_metric_history(run_id, curve)]
            assert steps == list(range(1, int(params["epochs_run"]) + 1)), (model_type, curve, steps)

    datasets = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs if d.tags[0].key == DATASET_CONTEXT_TAG}
    assert set(datasets) == SPLITS, (model_type, run.inputs.dataset_inputs)
    lineage_data = f"s3://{settings.bucket_processed}/global/{lineage['config_hash']}/"
    for split, dataset in datasets.items():
        assert dataset.name.endswith(f"/{split}") and lineage_data in dataset.source, (split, dataset)

    top = _artifacts(mlflow, run_id)
    assert MODEL_ARTIFACT_PATH in top and TEST_FORECAST_ARTIFACT.split("/")[0] in top, (model_type, top)
    bundle = _artifacts(mlflow, run_id, MODEL_ARTIFACT_PATH)
    assert {f"{MODEL_ARTIFACT_PATH}/{MODEL_FILE}", f"{MODEL_ARTIFACT_PATH}/{PREPROCESSING_FILE}"} <= bundle, bundle
    assert TEST_FORECAST_ARTIFACT in _artifacts(mlflow, run_id, TEST_FORECAST_ARTIFACT.split("/")[0])


def test_each_identifiers_registered_model_names_its_champion_and_the_run_shows_what_it_learned(
    mlflow, first_run, settings
) -> None:
    prefix = f"{settings.registered_model_prefix}-"
    models = {model.name: model for model in mlflow.search_registered_models(f"name LIKE '{prefix}%'")}
    global_model = registered_model_name(settings, "global")
    assert global_model in models and "'global'" in models[global_model].description
    with_champion = [model for model in models.values() if CHAMPION_ALIAS in model.aliases]
    assert global_model in {model.name for model in with_champion}
    for model in with_champion:
        version = mlflow.get_model_version_by_alias(model.name, CHAMPION_ALIAS)
        assert version.status == "READY" and version.run_id, (model.name, version.status)
        assert version.source.endswith(f"/{MODEL_ARTIFACT_PATH}"), version.source
        run = mlflow.get_run(version.run_id)
        assert run.data.tags["flts.identifier"] == model.name.removeprefix(prefix)
        assert version.tags["flts.model_type"] == run.data.tags["flts.model_type"]
        assert version.tags["flts.config_hash"] == run.data.tags["flts.config_hash"]

    champion = first_run["status"]["champion"]
    version = mlflow.get_model_version_by_alias(global_model, CHAMPION_ALIAS)
    assert (version.version, version.run_id) == (champion["model_version"], champion["run_id"])
    assert champion["model_type"] in version.description and version.run_id in version.description
    lineage = {**first_run["status"], "config_hash": first_run["upload"]["config_hash"]}
    _check_run(mlflow, mlflow.get_run(version.run_id), lineage, settings)


def test_every_run_of_the_lineage_carries_the_leaderboards_metrics(mlflow, first_run, settings) -> None:
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment is not None
    config_hash = first_run["upload"]["config_hash"]
    runs = mlflow.search_runs([experiment.experiment_id], f"tags.`flts.config_hash` = '{config_hash}'")
    ranked = {entry["model_type"] for entry in first_run["status"]["leaderboard"]}
    assert {run.data.tags["flts.model_type"] for run in runs} == ranked
    lineage = {**first_run["status"], "config_hash": config_hash}
    for run in runs:
        _check_run(mlflow, run, lineage, settings)
