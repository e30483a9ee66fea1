"""LightGBM on the window's lags: one gradient-boosted model per target column and horizon step (direct).

Each window becomes one row of features: every feature at every lag, with each target column read as the networks'
`relative` form reads it: relative to its last value, in units of the window's mean absolute step. Each booster
forecasts its column's change from the last value in those units, trained on the error in values (each window
weighted by its step squared). Neither the level nor the scale of a window is visible to the trees, so a level
that moved since training (which trees could not extrapolate to) moves the forecast with it, and a tree that
knows nothing forecasts persistence.

LightGBM trains (nonML image); each booster is saved as an ONNX graph (onnxmltools) that ONNX Runtime serves,
so inference needs no LightGBM, and no model file can run code on load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flts.config import BoostedConfig
from flts.data.windows import Windows
from flts.models.base import RELATIVE_STEP_FLOOR, WindowLayout, read_model_json, run_params, write_model_json
from flts.models.exported import onnx_session

if TYPE_CHECKING:
    from flts.train import EpochCallback, LineageData

MODEL_TYPE = "LIGHTGBM"
# The ONNX opset the graphs are converted for (the highest onnxmltools' LightGBM converter writes).
ONNX_OPSET = 15
_logger = logging.getLogger(__name__)


def _graph_file(step: int, target: int) -> str:
    """One graph per horizon step and target, named by position so any target name is a safe file name."""
    return f"lightgbm_step{step + 1}_target{target}.onnx"


def lag_features(inputs: np.ndarray, layout: WindowLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boosters' features [N, input_seq_len * n_features] (float32): the window with its targets relative to
    their last values in units of their mean absolute step; and those last values and steps [N, n_targets]."""
    targets = list(layout.target_indices)
    window = np.array(inputs, dtype=np.float32)
    last = window[:, -1, targets]
    step = np.abs(np.diff(window[:, :, targets], axis=1)).mean(axis=1) + RELATIVE_STEP_FLOOR
    window[:, :, targets] = (window[:, :, targets] - last[:, None, :]) / step[:, None, :]
    return window.reshape(len(window), layout.input_seq_len * layout.n_features), last, step


class BoostedForecaster:
    """ONNX graphs of the fitted boosters, [horizon step][target], each forecasting a change from the last value
    in units of the window's step."""

    model_type = MODEL_TYPE

    def __init__(self, layout: WindowLayout, graphs: list[list[bytes]], params: dict[str, Any]) -> None:
        if len(graphs) != layout.output_seq_len or any(len(step) != layout.n_targets for step in graphs):
            raise ValueError(f"need {layout.output_seq_len} x {layout.n_targets} graphs (horizon x targets)")
        self.layout = layout
        self.params = params
        self._graphs = graphs
        self._sessions = [[onnx_session(graph) for graph in step] for step in graphs]
        self._input_name = self._sessions[0][0].get_inputs()[0].name

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        self.layout.check(inputs, target_times)
        features, last, step = lag_features(inputs, self.layout)
        changes = [
            [session.run(None, {self._input_name: features})[0].reshape(-1) for session in horizon_step]
            for horizon_step in self._sessions
        ]
        forecast = np.asarray(changes, dtype=np.float32).transpose(2, 0, 1) * step[:, None, :] + last[:, None, :]
        return forecast.astype(np.float32)

    def save(self, directory: Path) -> None:
        write_model_json(directory, self.model_type, self.layout, self.params)
        for step, graphs in enumerate(self._graphs):
            for target, graph in enumerate(graphs):
                (directory / _graph_file(step, target)).write_bytes(graph)

    @classmethod
    def load(cls, directory: Path) -> BoostedForecaster:
        _, layout, params = read_model_json(directory, [MODEL_TYPE])
        graphs = [
            [(directory / _graph_file(step, target)).read_bytes() for target in range(layout.n_targets)]
            for step in range(layout.output_seq_len)
        ]
        return cls(layout, graphs, params)


def _to_onnx(booster: Any, n_features: int) -> bytes:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    graph = convert_lightgbm(booster, initial_types=[("features", FloatTensorType([None, n_features]))])
    return graph.SerializeToString()


def _dataset(
    windows: Windows,
    features: np.ndarray,
    last: np.ndarray,
    step: np.ndarray,
    horizon_step: int,
    target: int,
    reference: Any = None,
) -> Any:
    """One booster's data: the change from the last value in units of the window's step, each window weighted by
    its step squared, so the trees minimise the squared error in values (as every model is scored)."""
    import lightgbm

    label = (windows.targets[:, horizon_step, target] - last[:, target]) / step[:, target]
    return lightgbm.Dataset(features, label, weight=step[:, target] ** 2, reference=reference, free_raw_data=False)


def fit_boosted(train: Windows, validation: Windows, layout: WindowLayout, config: BoostedConfig) -> BoostedForecaster:
    """One booster per horizon step and target on the train windows; with validation windows, each stops after
    `early_stopping_rounds` rounds without a better validation error and keeps its best round."""
    import lightgbm

    if len(train) == 0:
        raise ValueError("no training windows")
    parameters = {
        "objective": "regression",
        "num_leaves": config.num_leaves,
        "learning_rate": config.learning_rate,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1,
        "min_data_in_leaf": config.min_data_in_leaf,
        "num_threads": config.threads,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }
    train_split = (train, *lag_features(train.inputs, layout))
    validation_split = (validation, *lag_features(validation.inputs, layout))
    stop = len(validation) > 0 and config.early_stopping_rounds > 0
    graphs: list[list[bytes]] = []
    rounds: list[list[int]] = []
    for step in range(layout.output_seq_len):
        graphs.append([])
        rounds.append([])
        for target in range(layout.n_targets):
            data = _dataset(*train_split, step, target)
            valid_sets, callbacks = [], []
            if stop:
                valid_sets = [_dataset(*validation_split, step, target, reference=data)]
                callbacks = [lightgbm.early_stopping(config.early_stopping_rounds, verbose=False)]
            booster = lightgbm.train(
                parameters, data, num_boost_round=config.max_rounds, valid_sets=valid_sets, callbacks=callbacks
            )
            best = booster.best_iteration or booster.current_iteration()
            if best < booster.current_iteration():
                booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=best))
            graphs[-1].append(_to_onnx(booster, train_split[1].shape[1]))
            rounds[-1].append(best)
    _logger.info("fitted %d LightGBM boosters; rounds %s", layout.output_seq_len * layout.n_targets, rounds)
    params = {"config": config.model_dump(mode="json"), "rounds": rounds}
    return BoostedForecaster(layout, graphs, params)


def fit_lineage(
    model_type: str, settings: Any, data: LineageData, on_epoch: EpochCallback
) -> tuple[BoostedForecaster, dict[str, Any]]:
    """The nonML service's fit (flts.models.types): the train windows, early stopping on the validation ones."""
    hyper = data.config.models.boosted
    forecaster = fit_boosted(data.windows["train"], data.windows["validation"], data.layout, hyper)
    return forecaster, run_params("lightgbm", hyper)
