"""Eval's per-column choice on every generator scenario: no column chosen worse than persistence.

The networks in the configured form, trained small, and persistence are scored the way trainers score
them; each column's choice must then be within 2 % of persistence's test RMSE on that column, and better
on average. The hardest case is level_shift: the uplink drops to a fifth of its level where the test file
starts, after the validation split eval chooses on.
"""

from __future__ import annotations

import numpy as np
import pytest

from flts.config import EvaluationConfig, PipelineConfig
from flts.data.generate import SCENARIOS, generate_lte_dataset
from flts.data.preprocess import preprocess
from flts.data.windows import Windows, make_windows
from flts.evaluate import decide
from flts.models.base import Forecaster, WindowLayout
from flts.models.baselines import PersistenceForecaster
from flts.models.recurrent import train_recurrent
from flts.scoring import forecast_metrics
from flts.tracking import RunSummary

TOLERANCE = 1.02


def _scenario(name: str) -> tuple[dict[str, Windows], WindowLayout, PipelineConfig]:
    config = PipelineConfig()
    train, test = generate_lte_dataset(train_rows=4000, test_rows=1000, scenario=name)
    processed = preprocess(train, test, config)
    meta = processed.metadata
    sizes = config.windows
    windows = {
        split: make_windows(
            getattr(processed, split),
            meta.time_column,
            meta.feature_columns,
            meta.target_columns,
            sizes.input_seq_len,
            sizes.output_seq_len,
        )
        for split in ("train", "validation", "test")
    }
    layout = WindowLayout.build(meta.feature_columns, meta.target_columns, sizes.input_seq_len, sizes.output_seq_len)
    return windows, layout, config


def _run(model_type: str, model: Forecaster, windows: dict[str, Windows], layout: WindowLayout) -> RunSummary:
    """A finished run with the metrics a trainer logs (flts.train.score): test, and validation per column."""
    metrics: dict[str, float] = {}
    for split in ("validation", "test"):
        forecast = model.predict(windows[split].inputs, windows[split].target_times)
        metrics |= forecast_metrics(windows[split].targets, forecast, layout.target_columns, prefix=split)
    return RunSummary(model_type.lower(), model_type, "cell", "FINISHED", metrics, 1, 2, None)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_column_is_chosen_worse_than_persistence(scenario: str) -> None:
    windows, layout, config = _scenario(scenario)
    hyper = config.models.recurrent.model_copy(update={"hidden_size": 32, "num_layers": 1, "epochs": 4})
    runs = [_run("PERSISTENCE", PersistenceForecaster(layout), windows, layout)]
    for model_type in ("GRU", "LSTM"):
        model, _ = train_recurrent(
            model_type,  # type: ignore[arg-type]
            windows["train"],
            windows["validation"],
            layout,
            hyper,
            device="cpu",
        )
        runs.append(_run(model_type, model, windows, layout))

    decision = decide(runs, EvaluationConfig(expected_model_types=["GRU", "LSTM", "PERSISTENCE"]), now_ms=10)
    metrics = {run.model_type: run.metrics for run in runs}
    assert set(decision.column_winners) == set(layout.target_columns)
    served = {
        column: metrics[winner][f"test_rmse__{column}"] / metrics["PERSISTENCE"][f"test_rmse__{column}"]
        for column, winner in decision.column_winners.items()
    }
    assert max(served.values()) <= TOLERANCE, served
    assert np.mean(list(served.values())) < 1.0, served
