"""The table of model types (flts.models.types): every entry trains through its trainer's fit, saves, loads through
its loader and forecasts, or says why it is not served; the config, eval, the loader and the trainers read it, and
the defaults it gives are the ones the pipeline always had."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from flts.config import (
    DEFAULT_PIPELINE_CONFIG,
    NETWORK_MODEL_TYPES,
    STATISTICAL_MODEL_TYPES,
    BaselineConfig,
    BoostedConfig,
    DataConfig,
    EvaluationConfig,
    ModelsConfig,
    ModelType,
    NetworkType,
    PipelineConfig,
    ProphetConfig,
    RecurrentConfig,
    StatisticalConfig,
    WindowConfig,
    load_pipeline_config,
)
from flts.data.generate import generate_lte_dataset
from flts.data.preprocess import preprocess
from flts.data.windows import make_windows
from flts.evaluate import TIE_BREAK_ORDER, not_servable_because
from flts.messages import ObjectRef, TrainingData
from flts.models.base import load_forecaster
from flts.models.types import MODEL_TYPES, ModelTypeSpec, _check, model_type_spec, names
from flts.settings import NonmlSettings, TrainSettings
from flts.train import LineageData, score
from nonML_container.service import expected_fits

TARGETS = ["down", "up"]
# Tiny on purpose: each type fits in a second or two (a network: one epoch), two steps ahead from six rows.
TINY = PipelineConfig(
    data=DataConfig(target_columns=TARGETS),
    windows=WindowConfig(input_seq_len=6, output_seq_len=2),
    models=ModelsConfig(
        recurrent=RecurrentConfig(hidden_size=8, num_layers=1, batch_size=64, epochs=1),
        boosted=BoostedConfig(max_rounds=5, early_stopping_rounds=0, min_data_in_leaf=5, threads=1),
        statistical=StatisticalConfig(max_fit_rows=200),
        prophet=ProphetConfig(max_fit_rows=200),
        baselines=BaselineConfig(season_length_steps=30),
    ),
)
UNUSED = ObjectRef(uri="s3://processed-data/global/tiny/object", sha256="0" * 64, size_bytes=0)


@pytest.fixture(scope="module")
def lineage() -> LineageData:
    """A lineage's data as a trainer reads it (flts.train.load_lineage_data), from memory instead of S3."""
    train, test = generate_lte_dataset(train_rows=400, test_rows=80, seed=5)
    processed = preprocess(train, test, TINY)
    meta = processed.metadata
    frames = {"train": processed.train, "validation": processed.validation, "test": processed.test}
    windows = {
        split: make_windows(frame, meta.time_column, meta.feature_columns, meta.target_columns, 6, 2)
        for split, frame in frames.items()
    }
    claim = TrainingData(
        config_hash="f" * 64,
        dataset_id="tiny",
        train=UNUSED,
        validation=UNUSED,
        test=UNUSED,
        metadata=UNUSED,
        time_column=meta.time_column,
        feature_columns=meta.feature_columns,
        target_columns=meta.target_columns,
        frequency=meta.frequency,
    )
    return LineageData(claim, frames, windows, meta, TINY)


def trainer_settings(spec: ModelTypeSpec) -> TrainSettings | NonmlSettings:
    """The settings of the service the table says trains `spec`, as that service starts."""
    if spec.trainer == "train":
        return TrainSettings(model_type=spec.name, torch_num_threads=1, device="cpu")
    return NonmlSettings(prophet_workers=1)


@pytest.mark.parametrize("spec", MODEL_TYPES, ids=lambda spec: spec.name)
def test_every_model_type_trains_saves_loads_and_forecasts(
    spec: ModelTypeSpec, lineage: LineageData, tmp_path: Path
) -> None:
    """Through the table only: the entry's trainer fit (the one its service binds), the trainer's scoring, the
    entry's loader, and the loader inference uses (an exported graph where the bundle has one)."""
    epochs: list[int] = []
    forecaster, params = spec.bind_fit(trainer_settings(spec))(lineage, lambda epoch, _record: epochs.append(epoch))
    assert forecaster.model_type == spec.name
    assert all(isinstance(value, str | int | float | bool | None) for value in params.values()), params
    if spec.family == "network":
        assert epochs == [1]
    metrics, _ = score(forecaster, lineage)
    assert np.isfinite(metrics["test_rmse"]), metrics
    assert all(np.isfinite(metrics[f"validation_rmse__{column}"]) for column in TARGETS), metrics

    forecaster.save(tmp_path)
    test = lineage.windows["test"]
    trained = forecaster.predict(test.inputs, test.target_times)
    for loaded in (spec.load(tmp_path), load_forecaster(tmp_path)):
        forecast = loaded.predict(test.inputs, test.target_times)
        assert forecast.shape == (len(test), 2, len(TARGETS)) and len(test) > 0
        assert np.isfinite(forecast).all()
        np.testing.assert_allclose(forecast, trained, rtol=1e-4, atol=1e-5)

    reason = not_servable_because(spec.name, EvaluationConfig())
    assert reason == spec.not_servable_because
    assert spec.servable or len(reason or "") > 20, "a type inference does not serve says why"


def test_the_table_is_the_config_literals() -> None:
    assert get_args(ModelType) == tuple(spec.name for spec in MODEL_TYPES)
    assert get_args(NetworkType) == NETWORK_MODEL_TYPES == names(family="network") == names(trainer="train")
    assert names(family="statistical") == STATISTICAL_MODEL_TYPES
    for name in NETWORK_MODEL_TYPES:
        assert TrainSettings(model_type=name).consumer_group == f"flts-train-{name.lower()}"
    with pytest.raises(ValueError, match="unknown model type 'ARIMA': one of GRU, LSTM"):
        model_type_spec("ARIMA")


def test_a_table_read_two_ways_is_refused() -> None:
    gru = model_type_spec("GRU")
    with pytest.raises(ValueError, match="share the name GRU"):
        _check((*MODEL_TYPES, gru))
    with pytest.raises(ValueError, match="share the tie_break 7"):
        _check((*MODEL_TYPES, ModelTypeSpec("GRU2", "network", "train", gru.loader, gru.fit, 7, False)))


def test_the_defaults_read_from_the_table_are_the_ones_the_pipeline_always_had() -> None:
    evaluation = EvaluationConfig()
    assert evaluation.expected_model_types == [
        *("GRU", "LSTM", "LIGHTGBM", "AUTOETS", "THETA", "AUTOARIMA", "PERSISTENCE", "SEASONAL_NAIVE")
    ]
    assert set(evaluation.promotable_model_types) == set(get_args(ModelType)) - {"PROPHET", "SEASONAL_NAIVE"}
    simpler_first = (
        *("PERSISTENCE", "SEASONAL_NAIVE", "AUTOETS", "THETA", "AUTOARIMA", "LIGHTGBM", "PROPHET"),
        *("GRU", "LSTM", "TCN", "TRANSFORMER", "SEQ2SEQ"),
    )
    assert simpler_first == TIE_BREAK_ORDER
    assert set(STATISTICAL_MODEL_TYPES) == {"AUTOETS", "AUTOARIMA", "THETA"}


def test_config_pipeline_yaml_expects_the_types_on_by_default() -> None:
    """A type switched on in the table and not in the file (or the other way) is named: every deployment reads the
    file, not the defaults. promotable_model_types is left out of it: every servable type."""
    evaluation = load_pipeline_config(DEFAULT_PIPELINE_CONFIG).evaluation
    on_by_default = [spec.name for spec in MODEL_TYPES if spec.on_by_default]
    missing = sorted(set(on_by_default) - set(evaluation.expected_model_types))
    extra = sorted(set(evaluation.expected_model_types) - set(on_by_default))
    assert not missing and not extra, f"config/pipeline.yaml's expected_model_types lacks {missing}, has {extra}"
    assert evaluation.expected_model_types == on_by_default, "listed in the table's order"
    assert evaluation.promotable_model_types == [spec.name for spec in MODEL_TYPES if spec.servable]


def test_the_nonml_service_trains_the_expected_types_of_its_own_fastest_first() -> None:
    every = list(get_args(ModelType))
    assert list(expected_fits(NonmlSettings(), every)) == [
        *("PERSISTENCE", "SEASONAL_NAIVE", "THETA", "AUTOETS", "LIGHTGBM", "AUTOARIMA", "PROPHET")
    ]
    assert list(expected_fits(NonmlSettings(), ["GRU", "PROPHET", "PERSISTENCE"])) == ["PERSISTENCE", "PROPHET"]


def test_reading_the_table_imports_no_model_dependency() -> None:
    """flts.config reads the table at import: every service imports it, the gateway's image has none of these."""
    script = (
        "import sys, flts.config, flts.evaluate, flts.models.types; "
        "print(sorted({'torch', 'lightgbm', 'statsforecast', 'prophet'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
