"""LightGBM on the window's lags: trained with LightGBM, served from ONNX graphs without it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from flts.config import BoostedConfig
from flts.data.windows import Windows
from flts.models.base import WindowLayout, load_forecaster
from flts.models.boosted import BoostedForecaster, fit_boosted, lag_features

LAYOUT = WindowLayout.build(["a", "hour", "b"], ["a", "b"], input_seq_len=6, output_seq_len=2)
CONFIG = BoostedConfig(max_rounds=60, threads=1)


def _windows(count: int, seed: int, level: float = 0.0) -> Windows:
    """Column a: a noisy sine the hour feature predicts; column b: a random walk around `level`."""
    rng = np.random.default_rng(seed)
    rows = count + LAYOUT.input_seq_len + LAYOUT.output_seq_len
    hour = np.arange(rows) % 24 / 24.0
    series = np.stack(
        [np.sin(2 * np.pi * hour) + rng.normal(0, 0.05, rows), hour, level + np.cumsum(rng.normal(0, 0.1, rows))],
        axis=1,
    ).astype(np.float32)
    starts = np.arange(count)
    inputs = np.array([series[s : s + 6] for s in starts], dtype=np.float32).reshape(count, 6, 3)
    targets = np.array([series[s + 6 : s + 8][:, [0, 2]] for s in starts], dtype=np.float32).reshape(count, 2, 2)
    times = np.zeros((count, 2), dtype="datetime64[ns]")
    return Windows(inputs=inputs, targets=targets, target_times=times)


@pytest.fixture(scope="module")
def fitted() -> BoostedForecaster:
    return fit_boosted(_windows(1_500, 0), _windows(300, 1), LAYOUT, CONFIG)


def test_lag_features_read_each_target_relative_to_its_last_value_in_units_of_its_step() -> None:
    inputs = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3) ** 1.5
    features, last, step = lag_features(inputs, LAYOUT)
    assert features.shape == (2, 6 * 3)
    np.testing.assert_array_equal(last, inputs[:, -1, [0, 2]])
    np.testing.assert_allclose(step, np.abs(np.diff(inputs[:, :, [0, 2]], axis=1)).mean(axis=1) + 1e-4, rtol=1e-6)
    window = features[0].reshape(6, 3)
    np.testing.assert_array_equal(window[:, 1], inputs[0, :, 1])  # other features as read
    np.testing.assert_allclose(window[:, 0], (inputs[0, :, 0] - last[0, 0]) / step[0, 0], rtol=1e-6)
    assert window[-1, 0] == window[-1, 2] == 0


def test_the_boosters_beat_persistence_where_the_features_explain_the_next_value(fitted) -> None:
    test = _windows(400, 2)
    forecast = fitted.predict(test.inputs, test.target_times)
    assert forecast.shape == (400, 2, 2) and forecast.dtype == np.float32
    persistence = np.repeat(test.inputs[:, -1:, [0, 2]], 2, axis=1)

    def rmse(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean((values[..., 0] - test.targets[..., 0]) ** 2)))

    assert rmse(forecast) < 0.5 * rmse(persistence)


def test_a_level_and_scale_never_seen_in_training_move_the_forecast_with_them(fitted) -> None:
    """Trees cannot extrapolate to a level they never saw; read relative to the window they need not: a window
    shifted and stretched (an uplink re-planned to a fifth of its level) gets the forecast shifted and stretched."""
    test = _windows(200, 3)
    moved = test.inputs.copy()
    moved[:, :, [0, 2]] = 0.2 * moved[:, :, [0, 2]] + 25.0
    expected = 0.2 * fitted.predict(test.inputs, test.target_times) + 25.0
    # Not exactly: the step's floor (1e-4) and float32 rounding nudge a few windows across a split. A forecast
    # from the training level would be off by about 25.
    np.testing.assert_allclose(fitted.predict(moved, test.target_times), expected, rtol=0, atol=0.1)


def test_early_stopping_keeps_the_best_round_per_model(fitted) -> None:
    rounds = fitted.params["rounds"]
    assert len(rounds) == 2 and all(len(step) == 2 for step in rounds)
    assert all(1 <= value <= CONFIG.max_rounds for step in rounds for value in step)


def test_the_saved_graphs_forecast_the_same_and_load_without_lightgbm(fitted, tmp_path: Path, monkeypatch) -> None:
    test = _windows(50, 4)
    fitted.save(tmp_path)
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # an import of it would now fail
    loaded = load_forecaster(tmp_path)
    assert isinstance(loaded, BoostedForecaster)
    np.testing.assert_array_equal(
        loaded.predict(test.inputs, test.target_times), fitted.predict(test.inputs, test.target_times)
    )


def test_the_graphs_compute_what_lightgbm_computes() -> None:
    import lightgbm

    train = _windows(800, 5)
    model = fit_boosted(train, _windows(0, 6), LAYOUT, BoostedConfig(max_rounds=40, threads=1))
    features, last, step = lag_features(train.inputs, LAYOUT)
    parameters = {
        **{"objective": "regression", "num_leaves": 31, "learning_rate": 0.05, "feature_fraction": 0.8},
        **{"bagging_fraction": 0.8, "bagging_freq": 1, "min_data_in_leaf": 20, "num_threads": 1, "seed": 42},
        **{"deterministic": True, "verbosity": -1},
    }
    label = (train.targets[:, 0, 0] - last[:, 0]) / step[:, 0]
    reference = lightgbm.train(parameters, lightgbm.Dataset(features, label, weight=step[:, 0] ** 2), 40)
    expected = reference.predict(features) * step[:, 0] + last[:, 0]
    served = model.predict(train.inputs, train.target_times)[:, 0, 0]
    # ONNX compares features with float32 thresholds: a window within float32 rounding of a split may go the other way.
    close = np.isclose(served, expected, rtol=1e-4, atol=1e-4)
    assert close.mean() > 0.98 and np.abs(served - expected).max() < 0.05
