"""The one interface every model type implements, and the `model.json` every saved model starts with.

Trainers, eval and inference handle every model type through `Forecaster` and `load_forecaster`,
so adding a model type never touches them. Saved models are JSON plus safetensors only (no
pickles: a model directory from object storage must not be able to run code on load), and
`load_forecaster` imports torch or prophet only for the types that need them (each type's loader is
named in the table of model types, flts.models.types), so a baseline loads in a process that has neither.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from flts.layout import GRAPH_FILE, MODEL_FILE
from flts.models import types as model_types

FORMAT_VERSION = 1
# Added to a window's mean absolute step where a model reads the window relative to its last value and in units of
# that step (the networks' relative form, LightGBM): a flat window (an idle column) reads 0, not 0/0.
RELATIVE_STEP_FLOOR = 1e-4


@dataclass(frozen=True)
class WindowLayout:
    """What a model's input and output windows hold: the contract with preprocessing and inference."""

    input_seq_len: int
    output_seq_len: int
    feature_columns: tuple[str, ...]
    target_columns: tuple[str, ...]
    target_indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.input_seq_len < 1 or self.output_seq_len < 1:
            raise ValueError("input_seq_len and output_seq_len must be at least 1")
        if len(self.target_columns) != len(self.target_indices) or not self.target_columns:
            raise ValueError("one target index per target column, and at least one target")
        for column, index in zip(self.target_columns, self.target_indices, strict=True):
            if not 0 <= index < len(self.feature_columns) or self.feature_columns[index] != column:
                raise ValueError(f"target {column!r} is not feature {index} of {list(self.feature_columns)}")

    @classmethod
    def build(
        cls,
        feature_columns: Sequence[str],
        target_columns: Sequence[str],
        input_seq_len: int,
        output_seq_len: int,
        target_indices: Sequence[int] | None = None,
    ) -> WindowLayout:
        """A layout whose target indices default to the targets' positions among the features."""
        features = tuple(feature_columns)
        targets = tuple(target_columns)
        missing = [column for column in targets if column not in features]
        if missing:
            raise ValueError(f"target columns {missing} are not among the feature columns")
        indices = tuple(target_indices) if target_indices is not None else tuple(map(features.index, targets))
        return cls(input_seq_len, output_seq_len, features, targets, tuple(int(i) for i in indices))

    @classmethod
    def targets_only(cls, target_columns: Sequence[str]) -> WindowLayout:
        """The layout of a model that reads nothing but the targets, one step in and one step out."""
        return cls.build(target_columns, target_columns, 1, 1)

    @property
    def n_features(self) -> int:
        return len(self.feature_columns)

    @property
    def n_targets(self) -> int:
        return len(self.target_columns)

    def check(self, inputs: np.ndarray, target_times: np.ndarray) -> None:
        """Raise ValueError saying exactly what is wrong when a batch does not fit this layout."""
        if inputs.ndim != 3 or inputs.shape[1:] != (self.input_seq_len, self.n_features):
            raise ValueError(
                f"inputs must be [N, {self.input_seq_len}, {self.n_features}] "
                f"(N windows, input_seq_len, features), got {list(inputs.shape)}"
            )
        if target_times.shape != (inputs.shape[0], self.output_seq_len):
            raise ValueError(
                f"target_times must be [{inputs.shape[0]}, {self.output_seq_len}] (N windows, horizon), "
                f"got {list(target_times.shape)}"
            )


@runtime_checkable
class Forecaster(Protocol):
    """A model of any type, as eval and inference see it (served ones include exported graphs and composites)."""

    model_type: str
    layout: WindowLayout

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        """Forecast [N, output_seq_len, n_targets] float32 (scaled) from [N, input_seq_len, n_features] scaled
        inputs; `target_times` [N, output_seq_len] datetime64 are the times being forecast."""
        ...


@runtime_checkable
class TrainedForecaster(Forecaster, Protocol):
    """A model as its trainer made it: it also writes the bundle every other process loads."""

    def save(self, directory: Path) -> None:
        """Write `model.json` and the model's weights (JSON or safetensors) into `directory`."""
        ...


def run_params(prefix: str, hyper: Any) -> dict[str, Any]:
    """A config section's fields (a pydantic model) as the run params a fit logs: `<prefix>.<field>`."""
    return {f"{prefix}.{key}": value for key, value in hyper.model_dump().items()}


def write_model_json(directory: Path, model_type: str, layout: WindowLayout, params: dict[str, Any]) -> None:
    """Write the `model.json` every saved model starts with; `params`: architecture and hyper-parameters."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "format_version": FORMAT_VERSION,
        "model_type": model_type,
        **asdict(layout),
        "params": params,
    }
    (directory / MODEL_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))


def read_model_json(
    directory: Path, expected_types: Collection[str] | None = None
) -> tuple[str, WindowLayout, dict[str, Any]]:
    """Read model type, layout and params from `model.json`; the type must be in `expected_types` if given."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a saved FLTS model directory")
    document = json.loads(path.read_text())
    if document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {document.get('format_version')!r}")
    if expected_types is not None and document["model_type"] not in expected_types:
        raise ValueError(f"{path} holds a {document['model_type']} model, not {' or '.join(expected_types)}")
    layout = WindowLayout(
        input_seq_len=int(document["input_seq_len"]),
        output_seq_len=int(document["output_seq_len"]),
        feature_columns=tuple(document["feature_columns"]),
        target_columns=tuple(document["target_columns"]),
        target_indices=tuple(int(i) for i in document["target_indices"]),
    )
    return str(document["model_type"]), layout, dict(document.get("params", {}))


def load_forecaster(directory: Path) -> Forecaster:
    """Load a saved model of any type, importing only what its type needs: a bundle with an exported graph
    (`GRAPH_FILE`) runs on ONNX Runtime whatever its type (flts.models.exported), so serving needs no PyTorch."""
    model_type, _, _ = read_model_json(directory)
    exported = (Path(directory) / GRAPH_FILE).is_file()
    if exported:
        target = "flts.models.exported:ExportedForecaster"
    elif model_type in model_types.BY_NAME:
        target = model_types.BY_NAME[model_type].loader
    else:
        raise ValueError(f"unknown model_type {model_type!r} in {Path(directory) / MODEL_FILE}")
    try:
        forecaster_class = model_types.resolve(target)
    except ImportError as exc:
        older = "" if exported else f"; a bundle without an exported graph ({GRAPH_FILE}) needs a retrain to be "
        older += "served by an image without PyTorch (`flts upload --force`)" if older else ""
        raise RuntimeError(f"this process cannot load the {model_type} model in {directory}: {exc}{older}") from exc
    return forecaster_class.load(Path(directory))


def frame_times(frame: pd.DataFrame, time_column: str) -> np.ndarray:
    """The frame's times as tz-naive (UTC) datetime64[ns], from its time column or else its DatetimeIndex.

    Returned as a bare array so nothing downstream aligns on the frame's index (a RangeIndex frame
    and a DatetimeIndex frame give the same result).
    """
    if time_column in frame.columns:
        times = pd.DatetimeIndex(pd.to_datetime(frame[time_column]).array)
    elif isinstance(frame.index, pd.DatetimeIndex):
        times = frame.index
    else:
        raise ValueError(f"frame has no {time_column!r} column and no DatetimeIndex")
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    return times.to_numpy(dtype="datetime64[ns]")
