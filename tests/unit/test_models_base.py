"""The model interface: window layouts, model.json, dispatch, and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flts.layout import MODEL_FILE
from flts.models.base import WindowLayout, frame_times, load_forecaster, read_model_json
from flts.models.baselines import PersistenceForecaster


def test_layout_finds_the_targets_among_the_features() -> None:
    layout = WindowLayout.build(["x", "b", "a"], ["a", "b"], input_seq_len=4, output_seq_len=2)
    assert layout.target_indices == (2, 1)
    assert (layout.n_features, layout.n_targets) == (3, 2)


@pytest.mark.parametrize(
    ("features", "targets", "indices", "message"),
    [
        (["x"], ["a"], None, "not among the feature columns"),
        (["a", "b"], ["a"], [1], "is not feature 1"),
        (["a", "b"], ["a", "b"], [0], "one target index per target"),
    ],
)
def test_layout_rejects_inconsistent_columns(
    features: list[str], targets: list[str], indices: list[int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        WindowLayout.build(features, targets, 1, 1, indices)


def test_model_json_round_trip(tmp_path: Path) -> None:
    layout = WindowLayout.build(["a", "b"], ["b"], 3, 2)
    PersistenceForecaster(layout).save(tmp_path)
    document = json.loads((tmp_path / MODEL_FILE).read_text())
    assert document["model_type"] == "PERSISTENCE"
    assert document["target_indices"] == [1]
    assert read_model_json(tmp_path) == ("PERSISTENCE", layout, {})


def test_load_forecaster_rejects_unknown_types_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        load_forecaster(tmp_path)
    PersistenceForecaster(WindowLayout.targets_only(["a"])).save(tmp_path)
    document = json.loads((tmp_path / MODEL_FILE).read_text())
    (tmp_path / MODEL_FILE).write_text(json.dumps({**document, "model_type": "ARIMA"}))
    with pytest.raises(ValueError, match="unknown model_type 'ARIMA'"):
        load_forecaster(tmp_path)


def test_loading_a_baseline_imports_neither_torch_nor_prophet(tmp_path: Path) -> None:
    PersistenceForecaster(WindowLayout.targets_only(["a"])).save(tmp_path)
    script = (
        "import sys; from flts.models.base import load_forecaster; "
        f"load_forecaster(__import__('pathlib').Path({str(tmp_path)!r})); "
        "print(sorted({'torch', 'prophet'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_frame_times_is_the_same_for_a_time_column_and_a_datetime_index() -> None:
    times = pd.date_range("2024-03-31 00:00", periods=3, freq="h", tz="Europe/Paris")
    frame = pd.DataFrame({"time": times, "a": [1.0, 2.0, 3.0]})
    expected = times.tz_convert("UTC").tz_localize(None).to_numpy()
    np.testing.assert_array_equal(frame_times(frame, "time"), expected)
    np.testing.assert_array_equal(frame_times(frame.set_index("time"), "time"), expected)
    with pytest.raises(ValueError, match="no 'time' column and no DatetimeIndex"):
        frame_times(frame.drop(columns="time"), "time")
