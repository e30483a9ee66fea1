"""Networks are served from their exported ONNX graphs: the same forecasts as PyTorch, and no PyTorch needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flts.config import RecurrentConfig
from flts.data.windows import Windows
from flts.layout import GRAPH_FILE
from flts.models.base import WindowLayout, load_forecaster
from flts.models.exported import ExportedForecaster, configure_threads
from flts.models.recurrent import WEIGHTS_FILE, train_recurrent

LAYOUT = WindowLayout.build(["a", "b", "gap"], ["a", "b"], 6, 2)
TINY = RecurrentConfig(hidden_size=12, num_layers=2, batch_size=16, epochs=2, learning_rate=0.01, seed=5)


def _windows(n: int, seed: int) -> Windows:
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(n, 6, 3)).astype(np.float32)
    targets = rng.normal(size=(n, 2, 2)).astype(np.float32)
    times = np.datetime64("2024-01-01", "ns") + np.arange(n * 2).reshape(n, 2) * np.timedelta64(2, "m")
    return Windows(inputs, targets, times)


def _saved(model_type: str, form: str, directory: Path):
    model, _ = train_recurrent(
        model_type, _windows(64, 1), _windows(16, 2), LAYOUT, TINY.model_copy(update={"form": form}), device="cpu"
    )
    model.save(directory)
    return model


@pytest.mark.parametrize("model_type", ["GRU", "LSTM", "TCN", "TRANSFORMER", "SEQ2SEQ"])
@pytest.mark.parametrize("form", ["direct", "residual", "relative"])
def test_the_exported_graph_forecasts_what_the_network_forecasts_for_any_batch_size(
    model_type: str, form: str, tmp_path: Path
) -> None:
    model = _saved(model_type, form, tmp_path)
    served = load_forecaster(tmp_path)
    assert isinstance(served, ExportedForecaster)
    assert (served.model_type, served.layout) == (model_type, LAYOUT)
    for n in (1, 7, 300):
        windows = _windows(n, 10 + n)
        expected = model.predict(windows.inputs, windows.target_times)
        forecast = served.predict(windows.inputs, windows.target_times)
        assert forecast.dtype == np.float32 and forecast.shape == (n, 2, 2)
        np.testing.assert_allclose(forecast, expected, rtol=1e-5, atol=1e-5)


def test_a_served_graph_checks_the_window_shape_like_the_network(tmp_path: Path) -> None:
    _saved("GRU", "relative", tmp_path)
    windows = _windows(3, 0)
    with pytest.raises(ValueError, match=r"inputs must be \[N, 6, 3\]"):
        load_forecaster(tmp_path).predict(windows.inputs[:, :5], windows.target_times)


def test_thread_counts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        configure_threads(0)


def test_a_process_without_pytorch_serves_a_network_and_names_the_retrain_an_older_bundle_needs(
    tmp_path: Path,
) -> None:
    """What the inference image is: ONNX Runtime and no torch. The whole inference service imports there."""
    _saved("GRU", "relative", tmp_path / "current")
    _saved("GRU", "relative", tmp_path / "older")
    (tmp_path / "older" / GRAPH_FILE).unlink()  # a bundle from before graphs were exported
    assert (tmp_path / "older" / WEIGHTS_FILE).is_file()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # import torch raises ImportError, as in the inference image
        from pathlib import Path
        import numpy as np
        import inference_container.service
        from flts.models.base import load_forecaster
        model = load_forecaster(Path({str(tmp_path / "current")!r}))
        times = np.zeros((4, 2), dtype="datetime64[ns]")
        print("forecast", model.predict(np.zeros((4, 6, 3), dtype=np.float32), times).shape)
        try:
            load_forecaster(Path({str(tmp_path / "older")!r}))
        except RuntimeError as exc:
            print("older:", exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "forecast (4, 2, 2)" in result.stdout
    assert "older:" in result.stdout and "retrain" in result.stdout and GRAPH_FILE in result.stdout, result.stdout
