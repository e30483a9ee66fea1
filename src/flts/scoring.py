"""Forecast scores (how good a forecast is; Prometheus metrics are elsewhere), per target and averaged,
on the scaled and the original scale.

Every model type is scored by this one function on the same test windows, so the
leaderboard compares like with like. The composite score eval ranks by is computed
on the scaled metrics, where targets of different units weigh the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from flts.config import ScoreWeights


def in_sample_naive_mae(series: np.ndarray) -> np.ndarray:
    """Per-target MAE of the one-step naive forecast over a [T, K] training series (MASE's denominator).

    NaNs (unfilled gaps) are ignored; a target with fewer than two values gets NaN.
    """
    values = np.asarray(series, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"series must be [T, K], got shape {values.shape}")
    diffs = np.abs(np.diff(values, axis=0))
    counts = np.sum(~np.isnan(diffs), axis=0)
    sums = np.nansum(diffs, axis=0)
    return np.divide(sums, counts, out=np.full(values.shape[1], np.nan), where=counts > 0)


def _per_target(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, MSE, RMSE and sMAPE (in percent, 0..200) of each target over all windows and horizon steps."""
    error = y_pred - y_true
    mae = np.mean(np.abs(error), axis=(0, 1))
    mse = np.mean(error**2, axis=(0, 1))
    denominator = np.abs(y_true) + np.abs(y_pred)
    ratio = np.divide(2.0 * np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    return {"mae": mae, "mse": mse, "rmse": np.sqrt(mse), "smape": 100.0 * np.mean(ratio, axis=(0, 1))}


def _emit(
    out: dict[str, float], prefix: str, suffix: str, values: Mapping[str, np.ndarray], names: Sequence[str]
) -> None:
    """Write averaged and per-target keys; NaN from bad forecasts propagates (so the score turns inf)."""
    for metric, per_target in values.items():
        out[f"{prefix}_{metric}{suffix}"] = float(np.mean(per_target))
        for name, value in zip(names, per_target, strict=True):
            out[f"{prefix}_{metric}{suffix}__{name}"] = float(value)


def _emit_mase(
    out: dict[str, float], prefix: str, mae: np.ndarray, naive_mae: np.ndarray, names: Sequence[str]
) -> None:
    """MASE for the targets whose naive MAE is a positive number; the others are undefined and left out."""
    defined = np.isfinite(naive_mae) & (naive_mae > 0)
    if not defined.any():
        return
    mase = mae[defined] / naive_mae[defined]
    out[f"{prefix}_mase"] = float(np.mean(mase))
    for name, value in zip(np.asarray(names, dtype=object)[defined], mase, strict=True):
        out[f"{prefix}_mase__{name}"] = float(value)


def forecast_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    target_names: Sequence[str],
    *,
    inverse: Callable[[np.ndarray], np.ndarray] | None = None,
    naive_mae: np.ndarray | None = None,
    prefix: str = "test",
) -> dict[str, float]:
    """Score [N, H, K] forecasts against the truth, on the scaled scale and (with `inverse`) the original one.

    Keys: `<prefix>_<metric>` averaged over targets and `<prefix>_<metric>__<target>` per target, and for a
    horizon of more than one step `<prefix>_mae_step<k>` and `<prefix>_rmse_step<k>` (scaled, k from 1),
    for mae, rmse, mse, smape, and mase when `naive_mae` (per-target in-sample one-step naive MAE on
    the training split, scaled) is given; then the same with `_original` after the metric name for
    mae, rmse, mse and smape computed after `inverse`, which maps a [M, K] array of scaled target
    values to the original scale. MASE is not repeated on the original scale: it is invariant under
    the affine scalers preprocessing uses.

    Zero denominators never produce NaN: sMAPE counts a step where truth and forecast are both 0 as
    a perfect 0; a target whose naive MAE is 0 or NaN (constant on train) has no MASE key and is left
    out of the averaged `<prefix>_mase`.
    """
    truth = np.asarray(y_true, dtype=np.float64)
    forecast = np.asarray(y_pred, dtype=np.float64)
    if truth.shape != forecast.shape or truth.ndim != 3:
        raise ValueError(f"y_true and y_pred must both be [N, H, K]; got {truth.shape} and {forecast.shape}")
    if truth.shape[2] != len(target_names):
        raise ValueError(f"{len(target_names)} target names for {truth.shape[2]} targets")
    if truth.shape[0] == 0:
        raise ValueError("no windows to score")

    out: dict[str, float] = {}
    scaled = _per_target(truth, forecast)
    _emit(out, prefix, "", scaled, target_names)
    if truth.shape[1] > 1:  # a multi-step horizon: how the error grows with the step (scaled, averaged over targets)
        for step in range(truth.shape[1]):
            per_step = _per_target(truth[:, step : step + 1], forecast[:, step : step + 1])
            for metric in ("mae", "rmse"):
                out[f"{prefix}_{metric}_step{step + 1}"] = float(np.mean(per_step[metric]))
    if naive_mae is not None:
        denominator = np.asarray(naive_mae, dtype=np.float64)
        if denominator.shape != (truth.shape[2],):
            raise ValueError(f"naive_mae must have one value per target, got shape {denominator.shape}")
        _emit_mase(out, prefix, scaled["mae"], denominator, target_names)

    if inverse is not None:
        shape = truth.shape
        original_truth = np.asarray(inverse(truth.reshape(-1, shape[2])), dtype=np.float64).reshape(shape)
        original_forecast = np.asarray(inverse(forecast.reshape(-1, shape[2])), dtype=np.float64).reshape(shape)
        _emit(out, prefix, "_original", _per_target(original_truth, original_forecast), target_names)
    return out


def composite_score(
    metrics: Mapping[str, float], weights: ScoreWeights, *, prefix: str = "test", target: str | None = None
) -> float:
    """The number eval ranks by (lower is better), averaged over the targets or of one `target`; inf when a
    scaled component is missing or not finite."""
    suffix = "" if target is None else f"__{target}"
    total = 0.0
    for name, weight in (("rmse", weights.rmse), ("mae", weights.mae), ("mse", weights.mse)):
        value = metrics.get(f"{prefix}_{name}{suffix}")
        if value is None or not math.isfinite(value):
            return math.inf
        total += weight * value
    return total
