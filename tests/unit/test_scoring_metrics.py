"""Forecast scores on a hand-made example whose every value is worked out below."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flts.config import ScoreWeights
from flts.scoring import composite_score, forecast_metrics, in_sample_naive_mae

# Two windows, horizon 1, targets "a" and "b".
# a: truth 1, 3; forecast 2, 1 -> errors 1, 2 -> MAE 1.5, MSE 2.5, sMAPE mean(2/3, 4/4) = 5/6.
# b: truth 0, 0; forecast 0, 1 -> errors 0, 1 -> MAE 0.5, MSE 0.5, sMAPE mean(0 (both zero), 2/1) = 1.
Y_TRUE = np.array([[[1.0, 0.0]], [[3.0, 0.0]]])
Y_PRED = np.array([[[2.0, 0.0]], [[1.0, 1.0]]])
TARGETS = ["a", "b"]


def test_scaled_metrics_per_target_and_averaged() -> None:
    metrics = forecast_metrics(Y_TRUE, Y_PRED, TARGETS)

    assert metrics["test_mae__a"] == pytest.approx(1.5)
    assert metrics["test_mae__b"] == pytest.approx(0.5)
    assert metrics["test_mse__a"] == pytest.approx(2.5)
    assert metrics["test_rmse__a"] == pytest.approx(math.sqrt(2.5))
    assert metrics["test_rmse__b"] == pytest.approx(math.sqrt(0.5))
    assert metrics["test_smape__a"] == pytest.approx(100 * 5 / 6)
    assert metrics["test_smape__b"] == pytest.approx(100.0)
    assert metrics["test_mae"] == pytest.approx(1.0)
    assert metrics["test_mse"] == pytest.approx(1.5)
    assert metrics["test_rmse"] == pytest.approx((math.sqrt(2.5) + math.sqrt(0.5)) / 2)
    assert metrics["test_smape"] == pytest.approx(100 * (5 / 6 + 1) / 2)
    assert not any(key.startswith("test_mase") or "_original" in key for key in metrics)


def test_a_multi_step_horizon_is_also_scored_step_by_step() -> None:
    # The two windows above as step 1, and a step 2 whose errors are twice as large.
    truth = np.concatenate([Y_TRUE, Y_TRUE], axis=1)
    forecast = np.concatenate([Y_PRED, Y_TRUE + 2 * (Y_PRED - Y_TRUE)], axis=1)
    metrics = forecast_metrics(truth, forecast, TARGETS)
    assert metrics["test_mae_step1"] == pytest.approx((1.5 + 0.5) / 2)
    assert metrics["test_mae_step2"] == pytest.approx((3.0 + 1.0) / 2)
    assert metrics["test_rmse_step2"] == pytest.approx((math.sqrt(10.0) + math.sqrt(2.0)) / 2)
    assert "test_mae_step1" not in forecast_metrics(Y_TRUE, Y_PRED, TARGETS), "one step is the whole horizon"


def test_smape_is_zero_when_truth_and_forecast_are_both_zero() -> None:
    zeros = np.zeros((3, 2, 1))
    metrics = forecast_metrics(zeros, zeros, ["z"])
    assert metrics["test_smape"] == 0.0
    assert all(math.isfinite(value) for value in metrics.values())


def test_mase_skips_targets_with_zero_naive_error() -> None:
    metrics = forecast_metrics(Y_TRUE, Y_PRED, TARGETS, naive_mae=np.array([0.5, 0.0]))
    assert metrics["test_mase__a"] == pytest.approx(3.0)
    assert "test_mase__b" not in metrics
    assert metrics["test_mase"] == pytest.approx(3.0)

    undefined = forecast_metrics(Y_TRUE, Y_PRED, TARGETS, naive_mae=np.array([0.0, np.nan]))
    assert not any(key.startswith("test_mase") for key in undefined)


def test_original_scale_keys_use_the_inverse() -> None:
    metrics = forecast_metrics(Y_TRUE, Y_PRED, TARGETS, inverse=lambda values: values * 10 + 5, prefix="val")
    assert metrics["val_mae_original__a"] == pytest.approx(15.0)
    assert metrics["val_mae_original__b"] == pytest.approx(5.0)
    assert metrics["val_mae_original"] == pytest.approx(10.0)
    assert metrics["val_mse_original"] == pytest.approx(150.0)
    assert metrics["val_rmse_original__a"] == pytest.approx(math.sqrt(250.0))
    # a on the original scale: truth 15, 35; forecast 25, 15 -> mean(20/40, 40/50) = 0.65.
    assert metrics["val_smape_original__a"] == pytest.approx(65.0)
    assert metrics["val_mae"] == pytest.approx(1.0)


def test_nan_forecasts_propagate_to_an_infinite_score() -> None:
    metrics = forecast_metrics(Y_TRUE, np.where(Y_PRED == 1.0, np.nan, Y_PRED), TARGETS)
    assert math.isnan(metrics["test_mae"])
    assert composite_score(metrics, ScoreWeights()) == math.inf


def test_composite_score_weights_and_missing_components() -> None:
    metrics = {"test_rmse": 2.0, "test_mae": 1.0, "test_mse": 4.0}
    assert composite_score(metrics, ScoreWeights()) == pytest.approx(0.5 * 2 + 0.3 * 1 + 0.2 * 4)
    assert composite_score(metrics, ScoreWeights(rmse=1.0, mae=0.0, mse=0.0)) == pytest.approx(2.0)
    assert composite_score({"test_rmse": 2.0, "test_mae": 1.0}, ScoreWeights()) == math.inf
    assert composite_score({**metrics, "test_mse": math.inf}, ScoreWeights()) == math.inf


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="both be"):
        forecast_metrics(Y_TRUE, Y_PRED[:1], TARGETS)
    with pytest.raises(ValueError, match="target names"):
        forecast_metrics(Y_TRUE, Y_PRED, ["a"])
    with pytest.raises(ValueError, match="one value per target"):
        forecast_metrics(Y_TRUE, Y_PRED, TARGETS, naive_mae=np.array([1.0]))


def test_in_sample_naive_mae_ignores_nans() -> None:
    series = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, np.nan], [4.0, 5.0]])
    assert in_sample_naive_mae(series) == pytest.approx([(2 + 1 + 2) / 3, 0.0])
    assert np.isnan(in_sample_naive_mae(series[:1])).all()
