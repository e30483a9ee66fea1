"""One affine, JSON-serialisable scaler: ``(x - center) / scale`` per column.

Every kind (minmax, standard, robust, maxabs) is just a choice of center and scale, so one class
covers them and a model's scaler travels as plain JSON (no pickles). A degenerate scale (constant
or empty column, zero IQR) falls back to the column's range, then to 1: never a division by zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

ScalerKind = Literal["minmax", "standard", "robust", "maxabs"]
# A scale below this fraction of the column's magnitude is rounding noise of a constant column
# (np.std of 16k copies of 1e6 + 0.1 is 2e-10, not 0).
_RELATIVE_MIN_SCALE = 1e-9


def _usable(scale: np.ndarray, magnitude: np.ndarray | float = 0.0) -> np.ndarray:
    return np.isfinite(scale) & (scale > 0) & (scale > _RELATIVE_MIN_SCALE * magnitude)


def _center_and_scale(values: np.ndarray, kind: ScalerKind) -> tuple[np.ndarray, np.ndarray]:
    """Per-column statistics of ``values`` (NaN = missing; every column has a value)."""
    low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    if kind == "minmax":
        return low, high - low
    if kind == "standard":
        return np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    if kind == "robust":
        q25, q50, q75 = np.nanpercentile(values, [25, 50, 75], axis=0)
        return q50, q75 - q25
    if kind == "maxabs":
        return np.zeros(values.shape[1]), np.maximum(np.abs(low), np.abs(high))
    raise ValueError(f"unknown scaler kind {kind!r}")


@dataclass(frozen=True)
class Scaler:
    kind: ScalerKind
    columns: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.columns) == len(self.center) == len(self.scale):
            raise ValueError("scaler columns, center and scale must have the same length")
        if not all(np.isfinite(self.center)) or not all(_usable(np.asarray(self.scale, dtype=float))):
            raise ValueError("scaler center must be finite and scale finite and positive")

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: list[str], kind: ScalerKind) -> Scaler:
        """Fit on ``frame`` (the train split only: statistics of later data must not leak)."""
        values = frame[columns].to_numpy(dtype=np.float64)
        values = np.where(np.isfinite(values), values, np.nan)
        # An empty or all-missing column is fitted as a constant 0: center 0, scale 1.
        values = np.where(np.isnan(values).all(axis=0), 0.0, values) if len(values) else np.zeros((1, len(columns)))
        center, scale = _center_and_scale(values, kind)
        span = np.nanmax(values, axis=0) - np.nanmin(values, axis=0)
        magnitude = np.nanmax(np.abs(values), axis=0)
        scale = np.where(_usable(scale, magnitude), scale, np.where(_usable(span, magnitude), span, 1.0))
        center = np.where(np.isfinite(center), center, 0.0)
        return cls(kind, tuple(columns), tuple(map(float, center)), tuple(map(float, scale)))

    def _parameters(self, columns: list[str] | tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        unknown = [name for name in columns if name not in self.columns]
        if unknown:
            raise KeyError(f"the scaler was not fitted on columns {unknown} (it knows {list(self.columns)})")
        index = [self.columns.index(name) for name in columns]
        return np.asarray(self.center)[index], np.asarray(self.scale)[index]

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The scaler's columns of ``frame``, scaled, as float32 (same index)."""
        values = self.transform_values(frame[list(self.columns)].to_numpy(dtype=np.float64))
        return pd.DataFrame(values, columns=list(self.columns), index=frame.index)

    def transform_values(self, values: np.ndarray) -> np.ndarray:
        """Scale an array whose last axis runs over the scaler's columns, as float32 (the serving path)."""
        return ((np.asarray(values, dtype=np.float64) - np.asarray(self.center)) / np.asarray(self.scale)).astype(
            np.float32
        )

    def inverse(self, values: np.ndarray, columns: list[str]) -> np.ndarray:
        """Back to the original scale (float64); the last axis of ``values`` runs over ``columns``."""
        center, scale = self._parameters(columns)
        array = np.asarray(values, dtype=np.float64)
        if array.shape[-1] != len(columns):
            raise ValueError(f"last axis has {array.shape[-1]} values but {len(columns)} columns were named")
        return array * scale + center

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "columns": list(self.columns),
            "center": list(self.center),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        return cls(
            data["kind"],
            tuple(data["columns"]),
            tuple(float(value) for value in data["center"]),
            tuple(float(value) for value in data["scale"]),
        )
