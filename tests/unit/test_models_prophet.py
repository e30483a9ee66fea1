"""Prophet: fitted from frames with and without a DatetimeIndex, forecast shape, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flts.config import ProphetConfig
from flts.models.base import WindowLayout, load_forecaster
from flts.models.prophet import ProphetForecaster, fit_prophet

CONFIG = ProphetConfig(weekly_seasonality=False)
TARGETS = ["a", "b"]
LAYOUT = WindowLayout.build(["a", "x", "b"], TARGETS, input_seq_len=4, output_seq_len=2)


def _frame(rows: int = 96) -> pd.DataFrame:
    """Hourly rows (RangeIndex, tz-aware time column): a daily cycle in a, a trend in b, a little noise.

    (Noise-free series make Prophet's optimiser crawl towards a zero noise scale.)
    """
    times = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    hours = np.arange(rows)
    noise = np.random.default_rng(0).normal(0.0, 0.01, (2, rows))
    return pd.DataFrame(
        {
            "time": times,
            "a": 0.5 + 0.4 * np.sin(2 * np.pi * hours / 24) + noise[0],
            "x": 0.0,
            "b": hours / rows + noise[1],
        }
    )


def _target_times(start: str, windows: int) -> np.ndarray:
    first = pd.date_range(start, periods=windows, freq="h").to_numpy(dtype="datetime64[ns]")
    return first[:, None] + np.array([0, 1]) * np.timedelta64(1, "h")


@pytest.fixture(scope="module")
def fitted() -> ProphetForecaster:
    return fit_prophet(_frame(), "time", TARGETS, CONFIG, workers=2, layout=LAYOUT)


def test_forecast_shape_and_values(fitted: ProphetForecaster) -> None:
    times = _target_times("2024-01-05", 30)
    forecast = fitted.predict(np.zeros((30, 4, 3), dtype=np.float32), times)
    assert forecast.shape == (30, 2, 2)
    assert forecast.dtype == np.float32
    hours = (times - np.datetime64("2024-01-01", "ns")) / np.timedelta64(1, "h")
    np.testing.assert_allclose(forecast[..., 0], 0.5 + 0.4 * np.sin(2 * np.pi * hours / 24), atol=0.05)
    # Overlapping windows forecast the same time identically.
    np.testing.assert_array_equal(forecast[:-1, 1], forecast[1:, 0])


def test_a_frame_with_a_datetime_index_fits_the_same_model(fitted: ProphetForecaster) -> None:
    indexed = _frame().set_index("time")
    times = _target_times("2024-01-05", 5)
    inputs = np.zeros((5, 4, 3), dtype=np.float32)
    for frame in (indexed, indexed.assign(time=indexed.index.tz_localize(None))):
        model = fit_prophet(frame, "time", TARGETS, CONFIG, workers=1, layout=LAYOUT)
        np.testing.assert_allclose(model.predict(inputs, times), fitted.predict(inputs, times), atol=1e-5)


def test_max_fit_rows_keeps_the_most_recent_rows() -> None:
    shuffled = _frame().sample(frac=1.0, random_state=0)
    model = fit_prophet(shuffled, "time", ["b"], CONFIG.model_copy(update={"max_fit_rows": 48}), workers=1)
    assert model.params["fit_rows"] == 48
    assert model.models[0].history["ds"].min() == pd.Timestamp("2024-01-03")
    assert model.layout == WindowLayout.targets_only(["b"])


def test_save_and_load_give_the_same_forecasts(fitted: ProphetForecaster, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "prophet_0.json", "prophet_1.json"]
    loaded = load_forecaster(tmp_path)
    assert isinstance(loaded, ProphetForecaster)
    assert loaded.layout == LAYOUT
    times = _target_times("2024-01-06", 7)
    inputs = np.zeros((7, 4, 3), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(inputs, times), fitted.predict(inputs, times))


def test_missing_targets_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\['c'\] are not in the training frame"):
        fit_prophet(_frame(), "time", ["a", "c"], CONFIG)
