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

from flts.data.io import DataError
from flts.data.preprocess import prepare_for_inference
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
        steps: list[pd.DataFrame] = []
        for _ in range(math.ceil(length / self.output_seq_len)):
            step = self._forecast_once(raw)
            steps.append(step)
            raw = self._extend(raw, step)
        forecast = pd.concat(steps).sort_values(["window", self.time_column], kind="stable")
        return [
            _records(group.head(length), self.time_column, self.target_columns)
            for _, group in forecast.groupby("window")
        ]

    def _validated(self, frame: pd.DataFrame, position: int) -> pd.DataFrame:
        """The checks only serving needs; prepare_for_inference checks order, grid and values."""
        where = f"window {position}: " if position else ""
        missing = [c for c in [self.time_column, *self.measured_columns] if c not in frame.columns]
        if missing:
            raise RequestError(f"{where}missing columns {missing}; the model needs {self.measured_columns}")
        if len(frame) < self.rows_needed:
            raise RequestError(f"{where}{len(frame)} rows sent; the model needs the last {self.rows_needed} rows")
        out = frame[[self.time_column, *self.measured_columns]].copy()
        out[self.time_column] = pd.to_datetime(out[self.time_column], utc=True, errors="coerce", format="ISO8601")
        if out[self.time_column].isna().any():
            bad = int(np.flatnonzero(out[self.time_column].isna().to_numpy())[0]) + 1
            raise RequestError(f"{where}row {bad}: {self.time_column} is not an ISO-8601 timestamp")
        if not out[self.time_column].is_monotonic_increasing:
            raise RequestError(f"{where}rows must be in increasing {self.time_column} order, oldest first")
        return out

    def _forecast_once(self, raw: list[pd.DataFrame]) -> pd.DataFrame:
        features = []
        for position, frame in enumerate(raw):
            try:
                features.append(prepare_for_inference(frame, self.metadata))
            except DataError as exc:
                raise RequestError(f"window {position}: {exc}" if position else str(exc)) from exc
        feature_columns = self.metadata["feature_columns"]
        inputs = np.stack([f[feature_columns].to_numpy(np.float32)[-self.input_seq_len :] for f in features])
        last_times = [pd.Timestamp(f[self.time_column].iloc[-1]) for f in features]
        target_times = np.stack([future_times(t, self.metadata["frequency"], self.output_seq_len) for t in last_times])
        scaled = self.forecaster.predict(inputs, target_times)
        values = self.scaler.inverse(scaled, self.target_columns).reshape(-1, len(self.target_columns))
        result = pd.DataFrame(values, columns=self.target_columns)
        result.insert(0, self.time_column, pd.to_datetime(target_times.reshape(-1), utc=True))
        result.insert(0, "window", np.repeat(np.arange(len(raw)), self.output_seq_len))
        return result

    def _extend(self, raw: list[pd.DataFrame], step: pd.DataFrame) -> list[pd.DataFrame]:
        """Append the forecast rows to each window (recursive forecasting)."""
        if set(self.target_columns) != set(self.measured_columns):
            return raw
        extended = []
        for i, frame in enumerate(raw):
            rows = step[step["window"] == i].drop(columns="window")[[self.time_column, *self.measured_columns]]
            extended.append(pd.concat([frame, rows], ignore_index=True).tail(self.rows_needed).reset_index(drop=True))
        return extended


def _records(frame: pd.DataFrame, time_column: str, targets: list[str]) -> list[dict[str, Any]]:
    times = frame[time_column].dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
    values = frame[targets].to_numpy(np.float64)
    return [
        {"ts": ts, **dict(zip(targets, map(float, row), strict=True))} for ts, row in zip(times, values, strict=True)
    ]
