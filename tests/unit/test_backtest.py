"""The test forecasts every run keeps: one row per window, step and target, selected by target, step and time."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from flts.backtest import forecast_frame, select, to_parquet_bytes


@pytest.fixture
def frame() -> pd.DataFrame:
    windows, horizon, targets = 4, 2, ["down", "up"]
    start = np.datetime64("2024-01-01T00:00")
    times = np.array([[start + np.timedelta64(2 * (w + s), "m") for s in range(horizon)] for w in range(windows)])
    forecasts = np.arange(windows * horizon * 2, dtype=np.float32).reshape(windows, horizon, 2)
    return forecast_frame(times.astype("datetime64[ns]"), forecasts, forecasts + 100, targets)


def test_the_frame_has_a_row_per_window_step_and_target(frame):
    assert len(frame) == 4 * 2 * 2
    first = frame.iloc[:4]
    assert list(first["step"]) == [1, 1, 2, 2]
    assert list(first["target"]) == ["down", "up", "down", "up"]
    assert list(first["forecast"]) == [0, 1, 2, 3]
    assert list(first["actual"] - first["forecast"]) == [100] * 4


def test_select_takes_one_target_and_step_in_time_order(frame):
    rows = select(frame, "up", step=2)
    assert list(rows.columns) == ["time", "forecast", "actual"]
    assert list(rows["forecast"]) == [3, 7, 11, 15]
    assert rows["time"].is_monotonic_increasing


def test_select_keeps_the_range_and_the_latest_rows_within_the_limit(frame):
    rows = select(frame, "down", 1, start=pd.Timestamp("2024-01-01T00:02"), end=pd.Timestamp("2024-01-01T00:06"))
    assert list(rows["forecast"]) == [4, 8, 12]
    assert list(select(frame, "down", 1, limit=2)["forecast"]) == [8, 12]


def test_the_frame_survives_parquet(frame):
    again = pd.read_parquet(io.BytesIO(to_parquet_bytes(frame)))
    assert list(again["target"].cat.categories) == ["down", "up"]
    pd.testing.assert_frame_equal(again, frame)


def test_shapes_that_disagree_are_refused():
    with pytest.raises(ValueError, match="shapes disagree"):
        forecast_frame(np.zeros((2, 1), "datetime64[ns]"), np.zeros((2, 1, 2)), np.zeros((2, 1, 2)), ["a"])
