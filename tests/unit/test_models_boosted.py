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


def test_lag_features_read_each_target_relative_to_its_last_value() -> None:
    inputs = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    features = lag_features(inputs, LAYOUT)
    assert features.shape == (2, 6 * 3 + 2)
    np.testing.assert_array_equal(features[:, -2:], inputs[:, -1, [0, 2]])
    np.testing.assert_array_equal(features[0, :18].reshape(6, 3)[:, 1], inputs[0, :, 1])  # other features as read
    np.testing.assert_array_equal(features[0, :18].reshape(6, 3)[-1, [0, 2]], [0, 0])


def test_the_boosters_beat_persistence_where_the_features_explain_the_next_value(fitted) -> None:
    test = _windows(400, 2)
    forecast = fitted.predict(test.inputs, test.target_times)
    assert forecast.shape == (400, 2, 2) and forecast.dtype == np.float32
    persistence = np.repeat(test.inputs[:, -1:, [0, 2]], 2, axis=1)

    def rmse(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean((values[..., 0] - test.targets[..., 0]) ** 2)))

    assert rmse(forecast) < 0.5 * rmse(persistence)


def test_a_level_never_seen_in_training_is_forecast_from_the_window(fitted) -> None:
    """The random walk column forecasts a change from its last value, so a shifted level shifts the forecast."""
    shifted = _windows(200, 3, level=25.0)
    forecast = fitted.predict(shifted.inputs, shifted.target_times)
    assert np.all(np.abs(forecast[:, 0, 1] - shifted.inputs[:, -1, 2]) < 1.0)


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
    features = lag_features(train.inputs, LAYOUT)
    model = fit_boosted(train, _windows(0, 6), LAYOUT, BoostedConfig(max_rounds=40, threads=1))
    reference = lightgbm.train(
        {
            "objective": "regression",
            "num_leaves": 31,
            "learning_rate": 0.05,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "min_data_in_leaf": 20,
            "num_threads": 1,
            "seed": 42,
            "deterministic": True,
            "verbosity": -1,
        },
        lightgbm.Dataset(features, train.targets[:, 0, 0] - features[:, -2]),
        num_boost_round=40,
    )
    expected = reference.predict(features) + features[:, -2]
    np.testing.assert_allclose(model.predict(train.inputs, train.target_times)[:, 0, 0], expected, atol=1e-4)
