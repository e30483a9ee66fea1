"""Baselines logged next to the learned models so the leaderboard is honest.

Persistence (the last value) is the floor every model must beat on this kind of data;
seasonal naive (the value one season earlier) is the floor for strongly daily-periodic
series. Neither needs torch or prophet, to train or to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from safetensors.numpy import load_file, save_file

from flts.models.base import WindowLayout, frame_times, read_model_json, write_model_json

if TYPE_CHECKING:
    from flts.train import EpochCallback, LineageData

HISTORY_FILE = "history.safetensors"


def default_season_length(frequency: str) -> int:
    """One day of steps for sub-daily grids (720 for "2min"), a week for daily data, else 1 (persistence).

    A calendar frequency without a fixed length (months, years) has no useful season here and gets 1.
    """
    try:
        step = pd.Timedelta(to_offset(frequency))
    except ValueError:
        return 1
    day = pd.Timedelta(days=1)
    if step < day:
        return max(1, round(day / step))
    return 7 if step == day else 1


def _persistence(inputs: np.ndarray, layout: WindowLayout) -> np.ndarray:
    last = np.asarray(inputs[:, -1, list(layout.target_indices)], dtype=np.float32)
    return np.repeat(last[:, None, :], layout.output_seq_len, axis=1)


class PersistenceForecaster:
    """Each target's last input value, repeated over the horizon."""

    model_type = "PERSISTENCE"

    def __init__(self, layout: WindowLayout) -> None:
        self.layout = layout

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        self.layout.check(inputs, target_times)
        return _persistence(inputs, self.layout)

    def save(self, directory: Path) -> None:
        write_model_json(directory, self.model_type, self.layout, {})

    @classmethod
    def load(cls, directory: Path) -> PersistenceForecaster:
        _, layout, _ = read_model_json(directory, [cls.model_type])
        return cls(layout)


class SeasonalNaiveForecaster:
    """The value one season before each target time, looked up in the stored target history.

    A serving window is far shorter than a season, so the model carries the (scaled) target
    history it was built from; a target time whose season-earlier value is not in that history
    (or is NaN) falls back to persistence.
    """

    model_type = "SEASONAL_NAIVE"

    def __init__(
        self,
        layout: WindowLayout,
        season_length: int,
        step: np.timedelta64,
        history_times: np.ndarray,
        history_values: np.ndarray,
    ) -> None:
        if season_length < 1:
            raise ValueError("season_length must be at least 1")
        if history_values.shape != (history_times.shape[0], layout.n_targets):
            raise ValueError(f"history_values must be [T, {layout.n_targets}], got {history_values.shape}")
        order = np.argsort(history_times, kind="stable")
        self.layout = layout
        self.season_length = int(season_length)
        self.step = np.timedelta64(step, "ns")
        self.history_times = np.asarray(history_times, dtype="datetime64[ns]")[order]
        self.history_values = np.asarray(history_values, dtype=np.float32)[order]

    @classmethod
    def from_history(
        cls,
        frame: pd.DataFrame,
        time_column: str,
        target_columns: list[str],
        season_length: int,
        *,
        layout: WindowLayout | None = None,
    ) -> SeasonalNaiveForecaster:
        """Build from the scaled frame of all splits (time column or DatetimeIndex), on its regular grid."""
        times = frame_times(frame, time_column)
        if times.shape[0] < 2:
            raise ValueError("seasonal naive needs at least two rows of history")
        step = np.median(np.diff(np.sort(times)))
        values = frame[list(target_columns)].to_numpy(dtype=np.float32)
        return cls(layout or WindowLayout.targets_only(target_columns), season_length, step, times, values)

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        self.layout.check(inputs, target_times)
        wanted = np.asarray(target_times, dtype="datetime64[ns]") - self.season_length * self.step
        position = np.clip(np.searchsorted(self.history_times, wanted), 0, len(self.history_times) - 1)
        found = (self.history_times[position] == wanted)[..., None]
        seasonal = self.history_values[position]
        return np.where(found & ~np.isnan(seasonal), seasonal, _persistence(inputs, self.layout))

    def save(self, directory: Path) -> None:
        params = {"season_length": self.season_length, "step_ns": int(self.step.astype(np.int64))}
        write_model_json(directory, self.model_type, self.layout, params)
        save_file(
            {"times_ns": self.history_times.astype(np.int64), "values": self.history_values},
            str(directory / HISTORY_FILE),
        )

    @classmethod
    def load(cls, directory: Path) -> SeasonalNaiveForecaster:
        _, layout, params = read_model_json(directory, [cls.model_type])
        history = load_file(str(directory / HISTORY_FILE))
        return cls(
            layout,
            params["season_length"],
            np.timedelta64(params["step_ns"], "ns"),
            history["times_ns"].astype("datetime64[ns]"),
            history["values"],
        )


def fit_persistence(
    model_type: str, settings: Any, data: LineageData, on_epoch: EpochCallback
) -> tuple[PersistenceForecaster, dict[str, Any]]:
    """The nonML service's fit (flts.models.types): nothing to learn."""
    return PersistenceForecaster(data.layout), {}


def fit_seasonal_naive(
    model_type: str, settings: Any, data: LineageData, on_epoch: EpochCallback
) -> tuple[SeasonalNaiveForecaster, dict[str, Any]]:
    """The nonML service's fit (flts.models.types): the targets of every split, one season
    (`models.baselines.season_length_steps`, else a day of steps) looked back."""
    season = data.config.models.baselines.season_length_steps or default_season_length(data.claim.frequency)
    history = pd.concat([data.frames[s] for s in ("train", "validation", "test")], ignore_index=True)
    forecaster = SeasonalNaiveForecaster.from_history(
        history, data.claim.time_column, data.claim.target_columns, season, layout=data.layout
    )
    return forecaster, {"season_length_steps": season}
