"""Serving a champion: raw rows in, forecasts with timestamps on the original scale out.

The rows go through the very preprocessing that was fitted at training (the stored scaler,
the same columns in the same order); a batch of windows is scored in one forward pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flts.data.io import DataError, numeric_values
from flts.data.preprocess import inference_features
from flts.data.scaler import Scaler
from flts.data.windows import future_times
from flts.models.base import Forecaster, load_forecaster

PREPROCESSING_FILE = "preprocessing.json"


class RequestError(ValueError):
    """The request cannot be served as sent (a 422 with this message)."""


@dataclass(frozen=True)
class ModelIdentity:
    identifier: str
    model_type: str
    model_version: str
    run_id: str
    config_hash: str


@dataclass(frozen=True)
class ServingModel:
    identity: ModelIdentity
    forecaster: Forecaster
    metadata: dict[str, Any]
    scaler: Scaler
    max_inference_length: int

    @classmethod
    def load(cls, directory: Path, identity: ModelIdentity, max_inference_length: int) -> ServingModel:
        metadata = json.loads((directory / PREPROCESSING_FILE).read_text())
        return cls(
            identity,
            load_forecaster(directory),
            metadata,
            Scaler.from_dict(metadata["scaler"]),
            max_inference_length,
        )

    @property
    def time_column(self) -> str:
        return self.metadata["time_column"]

    @property
    def measured_columns(self) -> list[str]:
        return list(self.metadata["measured_columns"])

    @property
    def target_columns(self) -> list[str]:
        return list(self.metadata["target_columns"])

    @property
    def input_seq_len(self) -> int:
        return int(self.metadata["config"]["windows"]["input_seq_len"])

    @property
    def output_seq_len(self) -> int:
        return int(self.metadata["config"]["windows"]["output_seq_len"])

    @property
    def rows_needed(self) -> int:
        """Rows a window must carry: the model's input length plus the longest lag feature."""
        return self.input_seq_len + max(self.metadata.get("lag_features") or [0])

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity.__dict__,
            "time_column": self.time_column,
            "input_columns": self.measured_columns,
            "target_columns": self.target_columns,
            "rows_needed": self.rows_needed,
            "input_seq_len": self.input_seq_len,
            "output_seq_len": self.output_seq_len,
            "frequency": self.metadata["frequency"],
            "max_inference_length": self.max_inference_length,
        }

    def forecast(self, windows: list[pd.DataFrame], length: int | None = None) -> list[list[dict[str, Any]]]:
        """Forecast ``length`` steps (default output_seq_len) after each window, recursively when longer."""
        length = length or self.output_seq_len
        if length > self.max_inference_length:
            raise RequestError(f"inference_length {length} exceeds the limit of {self.max_inference_length}")
        if length > self.output_seq_len and set(self.target_columns) != set(self.measured_columns):
            raise RequestError(
                f"inference_length {length} > output_seq_len {self.output_seq_len} needs every input column "
                "to be forecast (recursive forecasting), but this model forecasts only "
                f"{self.target_columns}"
            )
        raw = [self._validated(frame, i) for i, frame in enumerate(windows)]
        steps = math.ceil(length / self.output_seq_len)
        values, times = [], []
        for step in range(steps):
            step_values, step_times = self._forecast_once(raw)
            values.append(step_values)
            times.append(step_times)
            if step + 1 < steps:
                raw = self._extend(raw, step_values, step_times)
        return _records(
            np.concatenate(values, axis=1)[:, :length], np.concatenate(times, axis=1)[:, :length], self.target_columns
        )

    def _validated(self, frame: pd.DataFrame, position: int) -> Window:
        """The checks only serving needs; inference_features checks the grid and the values."""
        where = f"window {position}: " if position else ""
        missing = [c for c in [self.time_column, *self.measured_columns] if c not in frame.columns]
        if missing:
            raise RequestError(f"{where}missing columns {missing}; the model needs {self.measured_columns}")
        if len(frame) < self.rows_needed:
            raise RequestError(f"{where}{len(frame)} rows sent; the model needs the last {self.rows_needed} rows")
        times = pd.to_datetime(
            frame[self.time_column].to_numpy(dtype=object), utc=True, errors="coerce", format="ISO8601"
        )
        if times.isna().any():
            bad = int(np.flatnonzero(times.isna())[0]) + 1
            raise RequestError(f"{where}row {bad}: {self.time_column} is not an ISO-8601 timestamp")
        nanoseconds = times.as_unit("ns").asi8
        if (np.diff(nanoseconds) < 0).any():
            raise RequestError(f"{where}rows must be in increasing {self.time_column} order, oldest first")
        try:
            return Window(nanoseconds, numeric_values(frame, self.measured_columns))
        except DataError as exc:
            raise RequestError(f"{where}{exc}") from exc

    def _forecast_once(self, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        inputs = []
        for position, window in enumerate(windows):
            try:
                features = inference_features(window.nanoseconds, window.values, self.metadata)
            except DataError as exc:
                raise RequestError(f"window {position}: {exc}" if position else str(exc)) from exc
            inputs.append(features[-self.input_seq_len :])
        frequency, horizon = self.metadata["frequency"], self.output_seq_len
        target_times = np.stack(
            [future_times(pd.Timestamp(w.nanoseconds[-1], tz="UTC"), frequency, horizon) for w in windows]
        )
        scaled = self.forecaster.predict(np.stack(inputs), target_times)
        return self.scaler.inverse(scaled, self.target_columns), target_times

    def _extend(self, windows: list[Window], values: np.ndarray, times: np.ndarray) -> list[Window]:
        """Append the forecast rows to each window (recursive forecasting; every column is a target)."""
        order = [self.target_columns.index(column) for column in self.measured_columns]
        return [
            Window(
                np.concatenate([w.nanoseconds, step_times.astype("datetime64[ns]").astype(np.int64)])[
                    -self.rows_needed :
                ],
                np.concatenate([w.values, step_values[:, order]])[-self.rows_needed :],
            )
            for w, step_values, step_times in zip(windows, values, times, strict=True)
        ]


@dataclass(frozen=True)
class Window:
    """One request window: int64 UTC nanoseconds (ascending) and float64 measured values [rows, columns]."""

    nanoseconds: np.ndarray
    values: np.ndarray


def _records(values: np.ndarray, times: np.ndarray, targets: list[str]) -> list[list[dict[str, Any]]]:
    """[N, H, K] values and [N, H] UTC times as JSON-ready rows: {"ts": ..., target: value}."""
    stamps = np.char.add(np.datetime_as_string(times.astype("datetime64[s]"), unit="s"), "Z").tolist()
    return [
        [{"ts": ts, **dict(zip(targets, row, strict=True))} for ts, row in zip(window_ts, window_rows, strict=True)]
        for window_ts, window_rows in zip(stamps, values.astype(np.float64).tolist(), strict=True)
    ]
