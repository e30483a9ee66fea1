"""AutoETS, AutoARIMA and Theta: fitted by statsforecast, served by numpy recursions over each window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsforecast.models import AutoARIMA, AutoETS, Theta

from flts.config import StatisticalConfig
from flts.models.base import WindowLayout, load_forecaster
from flts.models.statistical import (
    ArimaRecursion,
    ExponentialSmoothing,
    StatisticalForecaster,
    _arima,
    _ets,
    _theta,
    fit_statistical,
)

ROWS = 1_500
_rng = np.random.default_rng(1)
SERIES = {
    "random walk": np.cumsum(_rng.normal(size=ROWS)),
    "trend": 0.05 * np.arange(ROWS) + 0.3 * np.cumsum(_rng.normal(size=ROWS)) + _rng.normal(size=ROWS),
    "autoregressive": 5 + np.convolve(_rng.normal(size=ROWS + 5), [1.0, 0.6, 0.3], "same")[:ROWS],
}


@pytest.mark.parametrize("name", SERIES)
@pytest.mark.parametrize(
    ("fit", "reference"),
    [(_ets, AutoETS), (_theta, Theta), (_arima, AutoARIMA)],
    ids=["AutoETS", "Theta", "AutoARIMA"],
)
def test_on_a_long_window_the_served_recursion_forecasts_what_statsforecast_forecasts(name, fit, reference) -> None:
    series = SERIES[name]
    served = fit(series).forecast(series[None, :], 3)[0]
    expected = reference(season_length=1).fit(series).predict(3)["mean"]
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("damped", [False, True])
def test_holts_trend_is_served_from_where_training_left_it(damped: bool) -> None:
    """A trend statsforecast barely updates (beta near 0) is not relearnt from a window: it starts each window."""
    series = SERIES["trend"]
    fitted = AutoETS(season_length=1, model="AAN", damped=damped).fit(series)
    alpha, beta, _, phi = fitted.model_["par"][:4]
    model = ExponentialSmoothing(
        alpha, beta, phi if damped else 1.0, float(fitted.model_["states"][-1, 1]), fitted.model_["method"]
    )
    served = model.forecast(series[None, :], 3)[0]
    expected = fitted.predict(3)["mean"]
    # statsforecast damps its second step by phi once where the textbook does twice; the first step is the same.
    steps = 1 if damped else 3
    np.testing.assert_allclose(served[:steps], expected[:steps], rtol=1e-5)


def test_simple_exponential_smoothing_with_alpha_one_is_persistence() -> None:
    windows = np.random.default_rng(0).normal(size=(5, 10))
    model = ExponentialSmoothing(1.0, 0.0, 1.0, 0.0, "ETS(A,N,N)")
    np.testing.assert_allclose(model.forecast(windows, 2), np.repeat(windows[:, -1:], 2, axis=1))


def test_an_arima_forecast_integrates_its_differences_back() -> None:
    """ARIMA(0,2,0) continues the window's last slope: a straight line stays straight."""
    line = np.arange(10, dtype=np.float64)[None, :] * 2.0 + 1.0
    forecast = ArimaRecursion(2, 0.0, (), (), "ARIMA(0,2,0)").forecast(line, 3)
    np.testing.assert_allclose(forecast, [[21.0, 23.0, 25.0]])


def test_a_window_too_short_for_the_differencing_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="longer than 2 rows"):
        ArimaRecursion(2, 0.0, (), (), "ARIMA(0,2,0)").forecast(np.zeros((1, 2)), 1)


LAYOUT = WindowLayout.build(["a", "hour", "b"], ["a", "b"], input_seq_len=10, output_seq_len=2)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": SERIES["random walk"], "hour": 0.0, "b": SERIES["autoregressive"]})


@pytest.mark.parametrize("model_type", ["AUTOETS", "AUTOARIMA", "THETA"])
def test_a_fitted_model_forecasts_each_target_from_its_window_and_survives_save_and_load(
    model_type: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    model = fit_statistical(model_type, frame, ["a", "b"], StatisticalConfig(max_fit_rows=500), LAYOUT)
    inputs = np.stack([frame.to_numpy()[start : start + 10] for start in range(0, 600, 7)]).astype(np.float32)
    times = np.zeros((len(inputs), 2), dtype="datetime64[ns]")
    forecast = model.predict(inputs, times)
    assert forecast.shape == (len(inputs), 2, 2) and forecast.dtype == np.float32
    # A forecast follows its own window: within the range of the series near it, not the training rows' end.
    assert np.all(np.abs(forecast[:, 0, 0] - inputs[:, -1, 0]) < 5)
    model.save(tmp_path)
    loaded = load_forecaster(tmp_path)
    assert isinstance(loaded, StatisticalForecaster) and loaded.model_type == model_type
    np.testing.assert_array_equal(loaded.predict(inputs, times), forecast)


def test_training_rows_with_missing_values_are_refused(frame: pd.DataFrame) -> None:
    holes = frame.copy()
    holes.loc[3, "a"] = np.nan
    with pytest.raises(ValueError, match="impute"):
        fit_statistical("AUTOETS", holes, ["a", "b"], StatisticalConfig(), LAYOUT)


@pytest.mark.parametrize("d", [0, 1])
def test_a_level_that_moved_since_training_is_not_pulled_back(d: int) -> None:
    """An ARIMA model reverts to the window's own level: a window shifted by 100 gets a forecast shifted by 100."""
    model = ArimaRecursion(d, 0.01 if d else 0.0, (0.6, 0.2), (0.3,), "ARIMA(2,d,1)")
    windows = np.random.default_rng(2).normal(size=(20, 10))
    np.testing.assert_allclose(model.forecast(windows + 100.0, 3), model.forecast(windows, 3) + 100.0)
