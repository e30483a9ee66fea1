"""ColumnComposite: each target column forecast by the model that won it on validation."""

import dataclasses

import numpy as np
import pytest

from flts.models.base import WindowLayout
from flts.models.baselines import PersistenceForecaster
from flts.models.composite import ColumnComposite


def _batch(layout: WindowLayout, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    inputs = rng.normal(size=(n, layout.input_seq_len, layout.n_features)).astype(np.float32)
    times = np.datetime64("2026-01-01", "ns") + np.arange(n * layout.output_seq_len).reshape(n, -1).astype(
        "timedelta64[m]"
    )
    return inputs, times


def test_each_column_comes_from_its_winner_and_the_rest_from_the_champion(gru_model) -> None:
    gru = gru_model.forecaster
    persistence = PersistenceForecaster(gru.layout)
    first, *rest = gru.layout.target_columns
    composite = ColumnComposite(gru, {"PERSISTENCE": persistence}, {first: "PERSISTENCE"})
    inputs, times = _batch(gru.layout)

    forecast = composite.predict(inputs, times)

    np.testing.assert_array_equal(forecast[:, :, 0], persistence.predict(inputs, times)[:, :, 0])
    np.testing.assert_array_equal(forecast[:, :, 1:], gru.predict(inputs, times)[:, :, 1:])
    assert not np.array_equal(forecast[:, :, 0], gru.predict(inputs, times)[:, :, 0])
    assert composite.column_models == {first: "PERSISTENCE", **dict.fromkeys(rest, "GRU")}


def test_model_info_says_which_model_serves_each_column(gru_model) -> None:
    first, *rest = gru_model.target_columns
    assert gru_model.describe()["column_models"] == dict.fromkeys(gru_model.target_columns, "GRU")
    persistence = PersistenceForecaster(gru_model.forecaster.layout)
    composite = ColumnComposite(gru_model.forecaster, {"PERSISTENCE": persistence}, {first: "PERSISTENCE"})
    served = dataclasses.replace(gru_model, forecaster=composite)
    assert served.describe()["column_models"] == {first: "PERSISTENCE", **dict.fromkeys(rest, "GRU")}


def test_members_must_read_the_champions_windows_and_winners_must_be_members(gru_model) -> None:
    gru = gru_model.forecaster
    other = dataclasses.replace(gru.layout, input_seq_len=gru.layout.input_seq_len + 1)
    with pytest.raises(ValueError, match="PERSISTENCE reads"):
        ColumnComposite(gru, {"PERSISTENCE": PersistenceForecaster(other)}, {})
    with pytest.raises(ValueError, match="LSTM"):
        ColumnComposite(gru, {}, {gru.layout.target_columns[0]: "LSTM"})
