"""A model's forecasts on the test split beside the actual values: kept by every trainer, drawn by the plots.

Each trainer scores its model on the test windows (`flts.train.score`) and keeps those forecasts, on
the original scale, as the run artifact `TEST_FORECAST_ARTIFACT`: a parquet in long form (time, step,
target, forecast, actual). The gateway's page and `flts plot` read it to draw any model of a lineage
against what really happened, without loading or running a model.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from flts.tracking import Tracker

TEST_FORECAST_ARTIFACT = "evaluation/test_forecast.parquet"
COLUMNS = ("time", "step", "target", "forecast", "actual")


def forecast_frame(
    target_times: np.ndarray, forecasts: np.ndarray, actuals: np.ndarray, targets: list[str]
) -> pd.DataFrame:
    """The long frame of [N, H] target times and [N, H, K] forecasts and actual values (original scale)."""
    windows, horizon, n_targets = forecasts.shape
    if actuals.shape != forecasts.shape or target_times.shape != (windows, horizon) or n_targets != len(targets):
        raise ValueError(
            f"shapes disagree: times {target_times.shape}, forecasts {forecasts.shape}, actuals {actuals.shape}, "
            f"{len(targets)} targets"
        )
    return pd.DataFrame(
        {
            "time": np.repeat(target_times.reshape(-1), n_targets),
            "step": np.tile(np.repeat(np.arange(1, horizon + 1), n_targets), windows),
            "target": pd.Categorical(np.tile(targets, windows * horizon), categories=targets),
            "forecast": forecasts.reshape(-1).astype(np.float64),
            "actual": actuals.reshape(-1).astype(np.float64),
        }
    )


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_test_forecast(tracker: Tracker, run_id: str) -> pd.DataFrame | None:
    """The run's test forecasts; None for a run that kept none (one trained before they were kept)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="flts-forecast-") as tmp:
        try:
            path = tracker.download(run_id, TEST_FORECAST_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return pd.read_parquet(Path(path))


def select(
    frame: pd.DataFrame,
    target: str,
    step: int = 1,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """One target's forecasts ``step`` steps ahead between ``start`` and ``end`` (inclusive), in time order;
    at most ``limit`` rows (if given), the latest when the range holds more."""
    rows = frame[(frame["target"] == target) & (frame["step"] == step)]
    if start is not None:
        rows = rows[rows["time"] >= start]
    if end is not None:
        rows = rows[rows["time"] <= end]
    rows = rows.sort_values("time")
    return (rows.tail(limit) if limit else rows)[["time", "forecast", "actual"]].reset_index(drop=True)
