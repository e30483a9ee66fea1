"""Supervised windows over one chronological split, shared by every trainer and the evaluator.

Windows are cut from a single split frame, so test windows (inputs and targets) never touch rows
used for training or early stopping. Times are UTC as tz-naive datetime64[ns] (numpy has no tz).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Windows:
    inputs: np.ndarray  # float32 [N, input_seq_len, n_features]
    targets: np.ndarray  # float32 [N, output_seq_len, n_targets]
    target_times: np.ndarray  # datetime64[ns] (UTC) [N, output_seq_len]

    def __len__(self) -> int:
        return len(self.inputs)


def _utc_naive(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy(dtype="datetime64[ns]")


def _slide(values: np.ndarray, length: int, start: int, count: int, stride: int) -> np.ndarray:
    """``count`` windows of ``length`` rows starting at rows start, start+stride, ... (a copy)."""
    if count == 0:
        return np.empty((0, length, *values.shape[1:]), dtype=values.dtype)
    view = sliding_window_view(values[start:], length, axis=0)[: (count - 1) * stride + 1 : stride]
    return np.ascontiguousarray(np.moveaxis(view, -1, 1))


def make_windows(
    frame: pd.DataFrame,
    time_column: str,
    feature_columns: list[str],
    target_columns: list[str],
    input_seq_len: int,
    output_seq_len: int,
    stride: int = 1,
) -> Windows:
    """Window i: inputs = rows [s, s+input_seq_len), targets = the next output_seq_len rows, s = i*stride.

    A frame shorter than input_seq_len + output_seq_len gives zero windows (not an error).
    """
    if input_seq_len < 1 or output_seq_len < 1 or stride < 1:
        raise ValueError("input_seq_len, output_seq_len and stride must be at least 1")
    features = frame[feature_columns].to_numpy(dtype=np.float32)
    targets = frame[target_columns].to_numpy(dtype=np.float32)
    times = _utc_naive(frame[time_column])
    span = len(frame) - input_seq_len - output_seq_len
    count = span // stride + 1 if span >= 0 else 0
    return Windows(
        inputs=_slide(features, input_seq_len, 0, count, stride),
        targets=_slide(targets, output_seq_len, input_seq_len, count, stride),
        target_times=_slide(times, output_seq_len, input_seq_len, count, stride),
    )


def future_times(last_time: pd.Timestamp, frequency: str, steps: int) -> np.ndarray:
    """The ``steps`` grid timestamps after ``last_time``: datetime64[ns] (UTC, tz-naive)."""
    start = pd.Timestamp(last_time)
    if start.tz is not None:
        start = start.tz_convert("UTC").tz_localize(None)
    return pd.date_range(start, periods=steps + 1, freq=frequency)[1:].to_numpy(dtype="datetime64[ns]")
