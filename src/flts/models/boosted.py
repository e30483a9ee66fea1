"""LightGBM on the window's lags: one gradient-boosted model per target column and horizon step (direct).

Each window becomes one row of features: every feature at every lag, with each target column read relative to
its last value (as the networks' `relative` form reads it), and those last values. Each model forecasts its
column's change from that last value, so it cannot drift away from a level that moved since training, and a
tree that knows nothing forecasts persistence.

LightGBM trains (nonML image); each booster is saved as an ONNX graph (onnxmltools) that ONNX Runtime serves,
so inference needs no LightGBM, and no model file can run code on load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from flts.config import BoostedConfig
from flts.data.windows import Windows
from flts.models.base import WindowLayout, read_model_json, write_model_json
from flts.models.exported import onnx_session

MODEL_TYPE = "LIGHTGBM"
# The ONNX opset the graphs are converted for (the highest onnxmltools' LightGBM converter writes).
ONNX_OPSET = 15
_logger = logging.getLogger(__name__)


def _graph_file(step: int, target: int) -> str:
    """One graph per horizon step and target, named by position so any target name is a safe file name."""
    return f"lightgbm_step{step + 1}_target{target}.onnx"


def lag_features(inputs: np.ndarray, layout: WindowLayout) -> np.ndarray:
    """[N, input_seq_len * n_features + n_targets] float32: the window, its targets less their last values, then
    those last values."""
    targets = list(layout.target_indices)
    window = np.array(inputs, dtype=np.float32)
    last = window[:, -1, targets]
    window[:, :, targets] -= last[:, None, :]
    return np.concatenate([window.reshape(len(window), layout.input_seq_len * layout.n_features), last], axis=1)


class BoostedForecaster:
    """ONNX graphs of the fitted boosters, [horizon step][target], each forecasting a change from the last value."""

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
        features = lag_features(inputs, self.layout)
        last = features[:, -self.layout.n_targets :]
        changes = [
            [session.run(None, {self._input_name: features})[0].reshape(-1) for session in step]
            for step in self._sessions
        ]
        return (np.asarray(changes, dtype=np.float32).transpose(2, 0, 1) + last[:, None, :]).astype(np.float32)

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
    train_features = lag_features(train.inputs, layout)
    validation_features = lag_features(validation.inputs, layout)
    stop = len(validation) > 0 and config.early_stopping_rounds > 0
    n_targets = layout.n_targets
    graphs: list[list[bytes]] = []
    rounds: list[list[int]] = []
    for step in range(layout.output_seq_len):
        graphs.append([])
        rounds.append([])
        for target in range(n_targets):
            label = train.targets[:, step, target] - train_features[:, target - n_targets]
            data = lightgbm.Dataset(train_features, label, free_raw_data=False)
            valid_sets, callbacks = [], []
            if stop:
                validation_label = validation.targets[:, step, target] - validation_features[:, target - n_targets]
                valid_sets = [lightgbm.Dataset(validation_features, validation_label, reference=data)]
                callbacks = [lightgbm.early_stopping(config.early_stopping_rounds, verbose=False)]
            booster = lightgbm.train(
                parameters, data, num_boost_round=config.max_rounds, valid_sets=valid_sets, callbacks=callbacks
            )
            best = booster.best_iteration or booster.current_iteration()
            if best < booster.current_iteration():
                booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=best))
            graphs[-1].append(_to_onnx(booster, train_features.shape[1]))
            rounds[-1].append(best)
    _logger.info("fitted %d LightGBM boosters; rounds %s", layout.output_seq_len * n_targets, rounds)
    params = {"config": config.model_dump(mode="json"), "rounds": rounds}
    return BoostedForecaster(layout, graphs, params)
