"""Persistence and seasonal naive on hand-made series whose forecasts can be read off by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flts.models.base import WindowLayout, load_forecaster
from flts.models.baselines import PersistenceForecaster, SeasonalNaiveForecaster, default_season_length

# Features: target "a", an extra feature "x", target "b"; the targets are features 0 and 2.
LAYOUT = WindowLayout.build(["a", "x", "b"], ["a", "b"], input_seq_len=2, output_seq_len=2)
START = np.datetime64("2024-01-01T00:00", "ns")
HOUR = np.timedelta64(1, "h")


def _hours(*offsets: int) -> np.ndarray:
    return START + np.array(offsets) * HOUR


def _history() -> pd.DataFrame:
    """Ten hourly rows: a = 10 * hour, b = -hour, except b is NaN at hour 4."""
    hours = np.arange(10)
    b = -hours.astype(float)
    b[4] = np.nan
    return pd.DataFrame({"time": _hours(*hours), "a": 10.0 * hours, "b": b})


def test_persistence_repeats_each_targets_last_value() -> None:
    inputs = np.array([[[1, 9, 2], [3, 9, 4]], [[5, 9, 6], [7, 9, 8]]], dtype=np.float32)
    forecast = PersistenceForecaster(LAYOUT).predict(inputs, np.stack([_hours(2, 3), _hours(4, 5)]))
    assert forecast.dtype == np.float32
    np.testing.assert_array_equal(forecast, [[[3, 4], [3, 4]], [[7, 8], [7, 8]]])


def test_persistence_rejects_windows_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"inputs must be \[N, 2, 3\]"):
        PersistenceForecaster(LAYOUT).predict(np.zeros((1, 3, 3)), _hours(3, 4)[None])
    with pytest.raises(ValueError, match=r"target_times must be \[1, 2\]"):
        PersistenceForecaster(LAYOUT).predict(np.zeros((1, 2, 3)), _hours(3)[None])


def test_seasonal_naive_looks_one_season_back_and_falls_back_to_persistence() -> None:
    model = SeasonalNaiveForecaster.from_history(_history(), "time", ["a", "b"], season_length=3, layout=LAYOUT)
    inputs = np.full((2, 2, 3), -1.0, dtype=np.float32)
    inputs[:, -1, 0], inputs[:, -1, 2] = 111.0, 222.0  # the persistence values
    forecast = model.predict(inputs, np.stack([_hours(5, 7), _hours(1, 2)]))
    # Window 0: hour 5 -> hour 2 (a 20, b -2); hour 7 -> hour 4 (a 40, b NaN -> persistence 222).
    # Window 1: hours 1 and 2 -> hours -2 and -1, before the history: persistence throughout.
    np.testing.assert_array_equal(forecast, [[[20, -2], [40, 222]], [[111, 222], [111, 222]]])


def test_seasonal_naive_reads_the_index_when_there_is_no_time_column() -> None:
    by_column = SeasonalNaiveForecaster.from_history(_history(), "time", ["a", "b"], 3, layout=LAYOUT)
    by_index = SeasonalNaiveForecaster.from_history(_history().set_index("time"), "time", ["a", "b"], 3, layout=LAYOUT)
    inputs, times = np.zeros((1, 2, 3), dtype=np.float32), _hours(8, 9)[None]
    np.testing.assert_array_equal(by_column.predict(inputs, times), by_index.predict(inputs, times))


@pytest.mark.parametrize(
    ("frequency", "season"), [("2min", 720), ("15min", 96), ("h", 24), ("7min", 206), ("D", 7), ("MS", 1)]
)
def test_default_season_length_is_a_day_of_steps(frequency: str, season: int) -> None:
    assert default_season_length(frequency) == season


def test_save_and_load_give_the_same_forecasts(tmp_path: Path) -> None:
    inputs = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    times = np.stack([_hours(5, 6), _hours(11, 12)])
    models = [
        PersistenceForecaster(LAYOUT),
        SeasonalNaiveForecaster.from_history(_history(), "time", ["a", "b"], 3, layout=LAYOUT),
    ]
    for model in models:
        model.save(tmp_path / model.model_type)
        loaded = load_forecaster(tmp_path / model.model_type)
        assert type(loaded) is type(model)
        assert loaded.layout == LAYOUT
        np.testing.assert_array_equal(loaded.predict(inputs, times), model.predict(inputs, times))


def test_loading_checks_the_model_type(tmp_path: Path) -> None:
    PersistenceForecaster(LAYOUT).save(tmp_path)
    with pytest.raises(ValueError, match="holds a PERSISTENCE model"):
        SeasonalNaiveForecaster.load(tmp_path)
