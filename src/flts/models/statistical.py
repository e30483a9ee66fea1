"""AutoETS, AutoARIMA and Theta: statsforecast fits them, numpy serves them from each window.

statsforecast chooses each target column's model and estimates its parameters on the most recent training rows
(`models.statistical.max_fit_rows`). A forecast runs the fitted model's recursion over the window being
forecast, all windows at once. That keeps the windows contract every model type shares (the forecast reads the
window, so a level that moved since training moves the forecast too), and serving needs neither statsforecast
nor its compiled parts. Each column's fit is stored as one of two recursions:

- `ExponentialSmoothing` (AutoETS, non-seasonal: none, additive or damped trend): the level starts at the
  window's first value and the trend at the fitted trend where training ended. The error type (additive or
  multiplicative) changes the likelihood, not the point forecasts.
- `ArimaRecursion` (AutoARIMA's ARIMA(p,d,q), its drift included; and Theta, which is simple exponential
  smoothing with drift, Hyndman & Billah 2003: ARIMA(0,1,1) with theta1 = alpha - 1 and drift (1 - 1/theta) * b,
  b the slope of the training rows' linear trend). A Kalman filter reads the window (differenced d times) from the
  ARMA part's stationary state, so a short window is read as well as the model allows.

On a long window both forecast as statsforecast does (tests/unit/test_models_statistical.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flts.config import STATISTICAL_MODEL_TYPES, StatisticalConfig
from flts.models.base import WindowLayout, read_model_json, run_params, write_model_json

if TYPE_CHECKING:
    from flts.train import EpochCallback, LineageData

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExponentialSmoothing:
    """One target column's ETS model: smoothing `alpha` (level) and `beta` (trend), damping `phi`; `trend` is
    where training left the trend (0 without one), each window's starting trend."""

    alpha: float
    beta: float
    phi: float
    trend: float
    description: str
    kind: str = "ets"

    @property
    def shortest_window(self) -> int:
        return 1

    def forecast(self, series: np.ndarray, horizon: int) -> np.ndarray:
        """[N, horizon] forecasts after each row of `series` [N, L]."""
        values = np.asarray(series, dtype=np.float64)
        level = values[:, 0].copy()
        trend = np.full_like(level, self.trend)
        for t in range(1, values.shape[1]):
            expected = level + self.phi * trend
            error = values[:, t] - expected
            level = expected + self.alpha * error
            trend = self.phi * trend + self.beta * error
        damping = np.cumsum(self.phi ** np.arange(1, horizon + 1))
        return level[:, None] + damping[None, :] * trend[:, None]


@dataclass(frozen=True)
class ArimaRecursion:
    """One target column's ARIMA model: differenced `d` times, less its mean, then AR `ar` and MA `ma` (R's signs:
    w_t = sum(ar_i w_{t-i}) + e_t + sum(ma_j e_{t-j})). The mean of once-differenced values is the fitted `drift`;
    an undifferenced (d = 0) model reverts to the window's own mean, not the training rows' (the mean AutoARIMA
    fitted), so a level that moved since training is not pulled back to the old one."""

    d: int
    drift: float
    ar: tuple[float, ...]
    ma: tuple[float, ...]
    description: str
    kind: str = "arima"

    def __post_init__(self) -> None:
        if self.d not in (0, 1, 2):
            raise ValueError(f"d must be 0, 1 or 2, got {self.d}")

    @property
    def shortest_window(self) -> int:
        return self.d + 1

    def forecast(self, series: np.ndarray, horizon: int) -> np.ndarray:
        """[N, horizon] forecasts after each row of `series` [N, L] (L > d): the Kalman filter's."""
        values = np.asarray(series, dtype=np.float64)
        if values.shape[1] <= self.d:
            raise ValueError(f"{self.description} needs windows longer than {self.d} rows, got {values.shape[1]}")
        last_values = []
        for _ in range(self.d):
            last_values.append(values[:, -1])
            values = np.diff(values, axis=1)
        mean = values.mean(axis=1) if self.d == 0 else np.full(values.shape[0], self.drift if self.d == 1 else 0.0)
        values = values - mean[:, None]
        transition, disturbance, covariance = self._state_space
        state = np.zeros((values.shape[0], transition.shape[0]))
        for t in range(values.shape[1]):
            # The gain depends on the model and the step only, not on the values: one for every window at once.
            gain = covariance[:, 0] / covariance[0, 0]
            state = state + np.outer(values[:, t] - state[:, 0], gain)
            covariance = covariance - np.outer(gain, covariance[0, :])
            state = state @ transition.T
            covariance = transition @ covariance @ transition.T + np.outer(disturbance, disturbance)
        steps = []
        for _ in range(horizon):
            steps.append(state[:, 0] + mean)
            state = state @ transition.T
        forecast = np.stack(steps, axis=1)
        for last in reversed(last_values):
            forecast = last[:, None] + np.cumsum(forecast, axis=1)
        return forecast

    @cached_property
    def _state_space(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ARMA part in the state-space form R's arima uses (Harvey): transition T, disturbance loading R, and
        the state's stationary covariance P = T P T' + R R' (unit innovation variance; it cancels out), which the
        window's first value is read against."""
        size = max(len(self.ar), len(self.ma) + 1)
        transition = np.zeros((size, size))
        transition[: len(self.ar), 0] = self.ar
        transition[:-1, 1:] = np.eye(size - 1)
        disturbance = np.zeros(size)
        disturbance[0] = 1.0
        disturbance[1 : len(self.ma) + 1] = self.ma
        identity = np.eye(size * size)
        stationary = np.linalg.solve(
            identity - np.kron(transition, transition), np.outer(disturbance, disturbance).ravel()
        )
        return transition, disturbance, stationary.reshape(size, size)


ColumnModel = ExponentialSmoothing | ArimaRecursion


def column_model_from_json(document: dict[str, Any]) -> ColumnModel:
    """The stored form of either recursion (`asdict`), by its `kind`."""
    fields = dict(document)
    kind = fields.pop("kind")
    if kind == "ets":
        return ExponentialSmoothing(**fields)
    if kind == "arima":
        return ArimaRecursion(**{**fields, "ar": tuple(fields["ar"]), "ma": tuple(fields["ma"])})
    raise ValueError(f"unknown statistical column model kind {kind!r}")


class StatisticalForecaster:
    """One fitted recursion per target column, run over each window's target values."""

    def __init__(self, model_type: str, layout: WindowLayout, columns: Sequence[ColumnModel]) -> None:
        if model_type not in STATISTICAL_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {STATISTICAL_MODEL_TYPES}, got {model_type!r}")
        if len(columns) != layout.n_targets:
            raise ValueError(f"{len(columns)} fitted columns for {layout.n_targets} targets")
        self.model_type = model_type
        self.layout = layout
        self.columns = list(columns)

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        self.layout.check(inputs, target_times)
        horizon = self.layout.output_seq_len
        forecasts = [
            recursion.forecast(inputs[:, :, index], horizon)
            for recursion, index in zip(self.columns, self.layout.target_indices, strict=True)
        ]
        return np.stack(forecasts, axis=-1).astype(np.float32)

    def save(self, directory: Path) -> None:
        write_model_json(directory, self.model_type, self.layout, {"columns": [asdict(c) for c in self.columns]})

    @classmethod
    def load(cls, directory: Path) -> StatisticalForecaster:
        model_type, layout, params = read_model_json(directory, STATISTICAL_MODEL_TYPES)
        return cls(model_type, layout, [column_model_from_json(column) for column in params["columns"]])


def _ets(series: np.ndarray) -> ColumnModel:
    from statsforecast.models import AutoETS

    model = AutoETS(season_length=1).fit(series).model_
    _error, trend, _season, damped = model["components"]
    alpha, beta, _gamma, phi = (float(value) for value in model["par"][:4])
    description = str(model["method"])
    if trend == "N":
        return ExponentialSmoothing(alpha, 0.0, 1.0, 0.0, description)
    if trend != "A":
        raise ValueError(f"AutoETS chose {description}: a multiplicative trend is not served")
    final_trend = float(model["states"][-1, 1])
    return ExponentialSmoothing(alpha, beta, phi if damped != "N" else 1.0, final_trend, description)


def _theta(series: np.ndarray) -> ArimaRecursion:
    from statsforecast.models import Theta

    parameters = Theta(season_length=1).fit(series).model_["par"]
    alpha, theta = float(parameters["alpha"]), float(parameters["theta"])
    slope = float(np.polyfit(np.arange(len(series), dtype=np.float64), series, 1)[0])
    drift = (1 - 1 / theta) * slope
    return ArimaRecursion(1, drift, (), (alpha - 1,), f"Theta(alpha={alpha:.3f}, theta={theta:g})")


def _arima(series: np.ndarray) -> ArimaRecursion:
    from statsforecast.models import AutoARIMA

    model = AutoARIMA(season_length=1).fit(series).model_
    p, q, seasonal_p, seasonal_q, _, d, seasonal_d = model["arma"]
    if seasonal_p or seasonal_q or seasonal_d:
        raise ValueError(f"AutoARIMA chose a seasonal model {model['arma']} with season_length=1")
    coef = {name: float(value) for name, value in model["coef"].items()}
    drift = coef.get("drift", 0.0) if d == 1 else 0.0
    ar = tuple(coef[f"ar{i}"] for i in range(1, p + 1))
    ma = tuple(coef[f"ma{j}"] for j in range(1, q + 1))
    with_drift = " with drift" if drift else ""
    return ArimaRecursion(int(d), drift, ar, ma, f"ARIMA({p},{d},{q}){with_drift}")


_FITS = {"AUTOETS": _ets, "AUTOARIMA": _arima, "THETA": _theta}


def fit_statistical(
    model_type: str,
    train_frame: pd.DataFrame,
    target_columns: Sequence[str],
    config: StatisticalConfig,
    layout: WindowLayout,
) -> StatisticalForecaster:
    """Fit `model_type` on each target column of the (scaled) train frame's most recent `max_fit_rows` rows."""
    if model_type not in _FITS:
        raise ValueError(f"model_type must be one of {STATISTICAL_MODEL_TYPES}, got {model_type!r}")
    values = train_frame[list(target_columns)].to_numpy(dtype=np.float64)[-config.max_fit_rows :]
    if np.isnan(values).any():
        raise ValueError("the training rows hold missing values: preprocessing must impute them first")
    columns = [_FITS[model_type](values[:, k]) for k in range(values.shape[1])]
    shortest = max(column.shortest_window for column in columns)
    if layout.input_seq_len < shortest:
        raise ValueError(f"{model_type} needs windows of at least {shortest} rows, not {layout.input_seq_len}")
    _logger.info("fitted %s on %d rows: %s", model_type, len(values), [column.description for column in columns])
    return StatisticalForecaster(model_type, layout, columns)


def fit_lineage(
    model_type: str, settings: Any, data: LineageData, on_epoch: EpochCallback
) -> tuple[StatisticalForecaster, dict[str, Any]]:
    """The nonML service's fit (flts.models.types), on the train split only: eval chooses each column's model by its
    validation scores."""
    hyper = data.config.models.statistical
    forecaster = fit_statistical(model_type, data.frames["train"], data.claim.target_columns, hyper, data.layout)
    columns = zip(data.claim.target_columns, forecaster.columns, strict=True)
    described = {f"column.{column}": model.description for column, model in columns}
    return forecaster, {**run_params("statistical", hyper), **described}
