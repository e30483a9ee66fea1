"""Real (small) served models for the service and integration tests: generated data, real preprocessing, real
training. A plugin of the root conftest, so every test directory can ask for them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from flts.config import PipelineConfig, RecurrentConfig
from flts.data.generate import generate_lte_dataset
from flts.data.preprocess import preprocess
from flts.data.windows import make_windows
from flts.layout import PREPROCESSING_FILE
from flts.messages import Forecast, Measurement
from flts.models.base import WindowLayout
from flts.models.baselines import PersistenceForecaster
from flts.models.recurrent import train_recurrent
from flts.predict import ModelIdentity, ServingModel

CONFIG = PipelineConfig()


@pytest.fixture(autouse=True)
def _auth_off_unless_a_test_turns_it_on(monkeypatch):
    """Routes are tested here as the local demo runs them; tests/service/test_auth.py turns auth on."""
    monkeypatch.setenv("AUTH_ENABLED", "false")


@pytest.fixture(scope="session")
def raw_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_lte_dataset(train_rows=1_500, test_rows=300, seed=3)


@pytest.fixture(scope="session")
def processed(raw_data):
    train, test = raw_data
    return preprocess(train, test, CONFIG)


# run id -> the bundle directory a fixture's model was loaded from
BUNDLES: dict[str, Path] = {}


def _serve(forecaster, processed, directory: Path, model_type: str, version: str) -> ServingModel:
    directory.mkdir(parents=True, exist_ok=True)
    forecaster.save(directory)
    BUNDLES[f"run-{model_type.lower()}"] = directory
    (directory / PREPROCESSING_FILE).write_text(json.dumps(processed.metadata.to_json()))
    identity = ModelIdentity("global", model_type, version, f"run-{model_type.lower()}", "f" * 64)
    return ServingModel.load(directory, identity, CONFIG.inference.max_inference_length)


@pytest.fixture(scope="session")
def layout(processed) -> WindowLayout:
    meta = processed.metadata
    return WindowLayout.build(
        meta.feature_columns, meta.target_columns, CONFIG.windows.input_seq_len, CONFIG.windows.output_seq_len
    )


@pytest.fixture(scope="session")
def gru_bundle(gru_model) -> Path:
    """The directory gru_model was loaded from (a trained model's bundle: model.json, weights, graph, preprocessing)."""
    return BUNDLES[gru_model.identity.run_id]


@pytest.fixture(scope="session")
def gru_model(processed, layout, tmp_path_factory) -> ServingModel:
    meta = processed.metadata
    windows = {
        split: make_windows(
            frame,
            meta.time_column,
            meta.feature_columns,
            meta.target_columns,
            CONFIG.windows.input_seq_len,
            CONFIG.windows.output_seq_len,
        )
        for split, frame in (("train", processed.train), ("validation", processed.validation))
    }
    forecaster, _ = train_recurrent(
        "GRU",
        windows["train"],
        windows["validation"],
        layout,
        RecurrentConfig(hidden_size=16, num_layers=1, epochs=2),
    )
    return _serve(forecaster, processed, tmp_path_factory.mktemp("gru"), "GRU", "1")


@pytest.fixture(scope="session")
def persistence_model(processed, layout, tmp_path_factory) -> ServingModel:
    return _serve(PersistenceForecaster(layout), processed, tmp_path_factory.mktemp("persistence"), "PERSISTENCE", "2")


class ConsumedMeasurement:
    """A measurement as a consumer hands it to the stream forecaster (one partition), without a broker."""

    def __init__(self, row: Measurement, offset: int = 0) -> None:
        self._key, self._value, self._offset = row.identifier.encode(), row.to_bytes(), offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list:
        return []

    def topic(self) -> str:
        return "measurements"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def forecast_event(identifier: str, at: datetime, value: float = 1.0) -> Forecast:
    """A forecast event as a replica publishes it on `forecasts` (one step of `down`), for its readers' tests."""
    return Forecast(
        identifier=identifier,
        model_type="PERSISTENCE",
        model_version="1",
        run_id="r",
        last_observed=at,
        measured_at=at,
        ts=[at],
        values={"down": [value]},
    )
