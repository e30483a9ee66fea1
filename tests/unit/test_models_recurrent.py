"""GRU and LSTM: shapes, reproducibility, learning, early stopping, save/load; small sine data, CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flts.config import RecurrentConfig
from flts.data.windows import Windows
from flts.models.base import WindowLayout
from flts.models.recurrent import RecurrentForecaster, RecurrentNet, train_recurrent

FEATURES = ["s", "phase", "c"]
TARGETS = ["s", "c"]
TARGET_INDICES = [0, 2]
LAYOUT = WindowLayout.build(FEATURES, TARGETS, 8, 2, TARGET_INDICES)
SMALL = RecurrentConfig(hidden_size=16, num_layers=2, batch_size=32, epochs=3, learning_rate=0.01, seed=3)


def _sine_windows(n: int, input_len: int = 8, horizon: int = 2, offset: int = 0) -> Windows:
    """Windows over sin/cos of period 12 steps plus a phase feature: easy to learn, far from persistence."""
    steps = np.arange(offset, offset + n + input_len + horizon)
    angle = 2 * np.pi * steps / 12
    series = np.stack([np.sin(angle), (steps % 12) / 12, np.cos(angle)], axis=1).astype(np.float32)
    times = np.datetime64("2024-01-01", "ns") + steps * np.timedelta64(2, "m")
    starts = np.arange(n)[:, None]
    inputs = series[starts + np.arange(input_len)]
    future = starts + input_len + np.arange(horizon)
    return Windows(inputs, series[future][:, :, TARGET_INDICES], times[future])


def _train(model_type: str, config: RecurrentConfig = SMALL, **windows: Windows):
    train = windows.get("train", _sine_windows(96))
    validation = windows.get("validation", _sine_windows(32, offset=96))
    return train_recurrent(model_type, train, validation, LAYOUT, config, device="cpu")


def _mse(forecast: np.ndarray, windows: Windows) -> float:
    return float(np.mean((forecast - windows.targets) ** 2))


@pytest.mark.parametrize("model_type", ["GRU", "LSTM", "TCN", "TRANSFORMER", "SEQ2SEQ"])
def test_forecast_shape_history_and_callbacks(model_type: str) -> None:
    seen: list[int] = []
    train, validation = _sine_windows(96), _sine_windows(32, offset=96)
    model, history = train_recurrent(
        model_type,
        train,
        validation,
        LAYOUT,
        SMALL,
        device="cpu",
        on_epoch=lambda epoch, record: seen.append(epoch),
    )
    forecast = model.predict(validation.inputs, validation.target_times)
    assert forecast.shape == (32, 2, 2)
    assert forecast.dtype == np.float32
    assert model.model_type == model_type
    assert seen == [1, 2, 3]
    assert [set(record) for record in history] == [{"epoch", "train_loss", "val_loss", "seconds"}] * 3
    assert torch.get_num_threads() == 1


def test_training_is_reproducible() -> None:
    first, first_history = _train("GRU")
    second, second_history = _train("GRU")
    for name, tensor in first.net.state_dict().items():
        assert torch.equal(tensor, second.net.state_dict()[name]), name
    assert [r["val_loss"] for r in first_history] == [r["val_loss"] for r in second_history]


@pytest.mark.parametrize("model_type", ["GRU", "LSTM", "TCN", "TRANSFORMER", "SEQ2SEQ"])
def test_a_small_model_learns_the_sine_well_below_persistence(model_type: str) -> None:
    train = _sine_windows(96)
    config = SMALL.model_copy(update={"epochs": 40, "early_stopping_patience": 0})
    model, history = _train(model_type, config, train=train)
    persistence = np.repeat(train.inputs[:, -1:, TARGET_INDICES], 2, axis=1)
    trained = _mse(model.predict(train.inputs, train.target_times), train)
    assert history[-1]["train_loss"] < 0.2 * history[0]["train_loss"]
    assert trained < 0.1 * _mse(persistence, train)


def test_early_stopping_stops_and_restores_the_best_epoch() -> None:
    # Validation targets that equal persistence: the better the model learns the sine, the worse it scores.
    validation = _sine_windows(32, offset=96)
    validation = Windows(
        validation.inputs,
        np.repeat(validation.inputs[:, -1:, TARGET_INDICES], 2, axis=1),
        validation.target_times,
    )
    config = SMALL.model_copy(update={"epochs": 30, "early_stopping_patience": 2})
    model, history = _train("GRU", config, validation=validation)
    losses = [record["val_loss"] for record in history]
    best = int(np.argmin(losses))
    assert len(history) == best + 1 + 2 < 30
    restored = _mse(model.predict(validation.inputs, validation.target_times), validation)
    assert restored == pytest.approx(losses[best], rel=1e-5)


@pytest.mark.parametrize(
    ("form", "expected"), [("residual", "last input value"), ("relative", "last input value"), ("direct", "zero")]
)
def test_an_untrained_net_forecasts_the_last_value_unless_in_direct_form(form: str, expected: str) -> None:
    layout = WindowLayout.build(FEATURES, TARGETS, 8, 2, TARGET_INDICES)
    net = RecurrentNet("GRU", layout, hidden_size=8, num_layers=1, dropout=0.0, form=form)  # type: ignore[arg-type]
    windows = _sine_windows(16)
    with torch.inference_mode():
        forecast = net(torch.from_numpy(windows.inputs)).numpy()
    last = np.repeat(windows.inputs[:, -1:, TARGET_INDICES], 2, axis=1)
    np.testing.assert_array_equal(forecast, last if expected == "last input value" else np.zeros_like(last))


@pytest.mark.parametrize(
    ("model_type", "form"), [("GRU", "residual"), ("LSTM", "residual"), ("GRU", "direct"), ("LSTM", "relative")]
)
def test_save_and_load_round_trip(model_type: str, form: str, tmp_path: Path) -> None:
    model, _ = _train(model_type, SMALL.model_copy(update={"epochs": 1, "form": form}))
    windows = _sine_windows(16, offset=200)
    model.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.json", "model.onnx", "weights.safetensors"]
    loaded = RecurrentForecaster.load(tmp_path)
    assert loaded.model_type == model_type
    assert loaded.layout == model.layout
    assert loaded.net.form == form
    np.testing.assert_array_equal(
        loaded.predict(windows.inputs, windows.target_times), model.predict(windows.inputs, windows.target_times)
    )


def test_a_model_saved_before_the_form_option_loads_in_residual_form(tmp_path: Path) -> None:
    model, _ = _train("GRU", SMALL.model_copy(update={"epochs": 1, "form": "relative"}))
    model.params["architecture"].pop("form")
    model.save(tmp_path)
    assert RecurrentForecaster.load(tmp_path).net.form == "residual"


def test_the_relative_form_forecasts_a_shifted_and_shrunk_window_the_same_way_shifted_and_shrunk() -> None:
    model, _ = _train("GRU", SMALL.model_copy(update={"epochs": 2, "form": "relative"}))
    windows = _sine_windows(16)
    moved = windows.inputs.copy()
    moved[:, :, TARGET_INDICES] = 0.2 * moved[:, :, TARGET_INDICES] + 0.7
    change = model.predict(windows.inputs, windows.target_times) - windows.inputs[:, -1:, TARGET_INDICES]
    moved_change = model.predict(moved, windows.target_times) - moved[:, -1:, TARGET_INDICES]
    np.testing.assert_allclose(moved_change, 0.2 * change, atol=1e-4)


def test_prediction_in_chunks_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = _train("GRU", SMALL.model_copy(update={"epochs": 1}))
    windows = _sine_windows(50)
    whole = model.predict(windows.inputs, windows.target_times)
    monkeypatch.setattr("flts.models.recurrent.PREDICT_CHUNK", 16)
    np.testing.assert_allclose(model.predict(windows.inputs, windows.target_times), whole, rtol=1e-6, atol=1e-6)


def test_mismatched_windows_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"validation windows are \[10, 5, 3\].*expected \[N, 8, 3\]"):
        _train("GRU", validation=_sine_windows(10, input_len=5))
    with pytest.raises(ValueError, match="model_type must be one of"):
        _train("PROPHET")


def test_a_transformer_needs_a_hidden_size_its_heads_divide() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        RecurrentNet("TRANSFORMER", LAYOUT, 18, 1, 0.0)
