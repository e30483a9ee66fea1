"""Windows: the right shapes, targets exactly the rows after the inputs, and an empty case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flts.data.windows import future_times, make_windows


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.date_range("2024-01-01", periods=rows, freq="2min", tz="UTC"),
            "a": np.arange(rows, dtype=np.float32),
            "b": np.arange(rows, dtype=np.float32) * 10,
            "c": -np.arange(rows, dtype=np.float32),
        }
    )


@pytest.mark.parametrize("stride", [1, 3])
def test_shapes_and_alignment(stride: int) -> None:
    frame = _frame(30)
    windows = make_windows(frame, "time", ["a", "b", "c"], ["c", "a"], 5, 3, stride=stride)
    count = (30 - 5 - 3) // stride + 1
    assert len(windows) == count
    assert windows.inputs.shape == (count, 5, 3) and windows.inputs.dtype == np.float32
    assert windows.targets.shape == (count, 3, 2) and windows.targets.dtype == np.float32
    assert windows.target_times.shape == (count, 3) and windows.target_times.dtype == np.dtype("datetime64[ns]")
    assert windows.inputs.flags.c_contiguous and windows.targets.flags.c_contiguous
    times = frame["time"].dt.tz_localize(None).to_numpy()
    for index in range(count):
        start = index * stride
        np.testing.assert_array_equal(windows.inputs[index], frame[["a", "b", "c"]].to_numpy()[start : start + 5])
        np.testing.assert_array_equal(windows.targets[index], frame[["c", "a"]].to_numpy()[start + 5 : start + 8])
        np.testing.assert_array_equal(windows.target_times[index], times[start + 5 : start + 8])


def test_exactly_one_window_and_empty_windows() -> None:
    assert len(make_windows(_frame(8), "time", ["a"], ["a"], 5, 3)) == 1
    empty = make_windows(_frame(7), "time", ["a", "b"], ["b"], 5, 3)
    assert len(empty) == 0
    assert empty.inputs.shape == (0, 5, 2)
    assert empty.targets.shape == (0, 3, 1)
    assert empty.target_times.shape == (0, 3) and empty.target_times.dtype == np.dtype("datetime64[ns]")
    assert len(make_windows(_frame(0), "time", ["a"], ["a"], 5, 3)) == 0


def test_invalid_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        make_windows(_frame(10), "time", ["a"], ["a"], 0, 1)


def test_future_times_continue_the_grid_in_utc() -> None:
    expected = np.array(["2024-01-01T01:02", "2024-01-01T01:04"], dtype="datetime64[ns]")
    aware = pd.Timestamp("2024-01-01T02:00", tz="Europe/Paris")
    np.testing.assert_array_equal(future_times(aware, "2min", 2), expected)
    np.testing.assert_array_equal(future_times(pd.Timestamp("2024-01-01T01:00"), "2min", 2), expected)
    assert future_times(aware, "2min", 0).shape == (0,)
