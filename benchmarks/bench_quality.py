"""Forecast quality relative to persistence, per target column, on the bundled data and its scenarios.

For each scenario (`flts generate --scenario`): the model types (`--models`: GRU and LSTM by default; any network,
LIGHTGBM, AUTOETS, AUTOARIMA, THETA, PROPHET, SEASONAL_NAIVE), the networks in each form (`models.recurrent.form`:
direct, residual, relative; see flts.models.recurrent), trained as the pipeline trains them (default
config, one thread for the networks), scored on the validation and the test windows: each column's scaled RMSE
divided by persistence's (below 1: better than "the last value"), their mean, and the training time.
A COLUMNS row per form serves each column by its validation winner (the networks of that form, the other families
and persistence),
as inference serves a champion column by column.

    .venv/bin/python benchmarks/bench_quality.py --scenarios default level_shift --output quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_training import bundled_dataset, window_layout

from flts.config import NETWORK_MODEL_TYPES, STATISTICAL_MODEL_TYPES
from flts.data.windows import Windows
from flts.evaluate import NOT_SERVABLE_BECAUSE
from flts.models.base import Forecaster
from flts.models.baselines import PersistenceForecaster, SeasonalNaiveForecaster, default_season_length
from flts.models.boosted import fit_boosted
from flts.models.prophet import fit_prophet
from flts.models.recurrent import train_recurrent
from flts.models.statistical import fit_statistical

FORMS = ("residual", "relative", "direct")


def _column_rmse(model: Forecaster, windows: Windows) -> np.ndarray:
    error = model.predict(windows.inputs, windows.target_times) - windows.targets
    return np.sqrt(np.mean(error.astype(np.float64) ** 2, axis=(0, 1)))


def _relative(model: Forecaster, persistence: Forecaster, windows: dict[str, Windows]) -> dict[str, list[float]]:
    """Per-column RMSE over persistence's, on validation and test."""
    return {
        split: [
            round(float(r), 4) for r in _column_rmse(model, windows[split]) / _column_rmse(persistence, windows[split])
        ]
        for split in ("validation", "test")
    }


def _fit(model_type: str, form: str, config, processed, windows: dict[str, Windows], layout, args) -> Forecaster:
    """`model_type` trained as the pipeline trains it; `form` applies to the networks only."""
    if model_type == "LIGHTGBM":
        return fit_boosted(windows["train"], windows["validation"], layout, config.models.boosted)
    meta = processed.metadata
    if model_type in STATISTICAL_MODEL_TYPES:
        return fit_statistical(model_type, processed.train, meta.target_columns, config.models.statistical, layout)
    if model_type == "PROPHET":  # as nonml fits it: on train and validation
        history = pd.concat([processed.train, processed.validation], ignore_index=True)
        return fit_prophet(history, meta.time_column, meta.target_columns, config.models.prophet, layout=layout)
    if model_type == "SEASONAL_NAIVE":  # as nonml builds it: from every split's history
        history = pd.concat([processed.train, processed.validation, processed.test], ignore_index=True)
        season = config.models.baselines.season_length_steps or default_season_length(meta.frequency)
        targets = meta.target_columns
        return SeasonalNaiveForecaster.from_history(history, meta.time_column, targets, season, layout=layout)
    hyper = config.models.recurrent.model_copy(update={"epochs": args.epochs, "form": form, "seed": args.seed})
    model, _ = train_recurrent(model_type, windows["train"], windows["validation"], layout, hyper, device="cpu")
    return model


def scenario_quality(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    config, processed, windows = bundled_dataset(args.rows, args.test_rows, scenario)
    layout = window_layout(processed, config)
    persistence = PersistenceForecaster(layout)
    runs = []
    for model_type in args.models:
        for form in args.forms if model_type in NETWORK_MODEL_TYPES else ["-"]:
            started = time.perf_counter()
            model = _fit(model_type, form, config, processed, windows, layout, args)
            relative = _relative(model, persistence, windows)
            runs.append(
                {
                    "model_type": model_type,
                    "form": form,
                    "train_s": round(time.perf_counter() - started, 1),
                    "relative_rmse": relative,
                    "mean_relative_rmse": {split: round(float(np.mean(v)), 4) for split, v in relative.items()},
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr)
    return {"scenario": scenario, "targets": list(layout.target_columns), "runs": runs + column_composites(runs)}


def column_composites(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per network form: each column served by the model with the lowest validation RMSE among the networks of that
    form, the other servable families and persistence (1.0), as inference serves a champion column by column
    (flts.models.composite); its test figures are then each column's winner's."""
    composites = []
    others = [run for run in runs if run["form"] == "-" and run["model_type"] not in NOT_SERVABLE_BECAUSE]
    for form in dict.fromkeys(run["form"] for run in runs if run["form"] != "-") or ["-"]:
        members = [run for run in runs if run["form"] == form != "-"] + others
        if not members:
            continue
        columns = range(len(members[0]["relative_rmse"]["test"]))
        chosen = []
        for column in columns:
            scores = {run["model_type"]: run["relative_rmse"]["validation"][column] for run in members}
            best = min(scores, key=scores.get)
            chosen.append(best if scores[best] < 1.0 else "PERSISTENCE")
        relative = {
            split: [
                1.0
                if winner == "PERSISTENCE"
                else next(r for r in members if r["model_type"] == winner)["relative_rmse"][split][column]
                for column, winner in zip(columns, chosen, strict=True)
            ]
            for split in ("validation", "test")
        }
        composites.append(
            {
                "model_type": "COLUMNS",
                "form": form,
                "column_models": chosen,
                "train_s": sum(run["train_s"] for run in members),
                "relative_rmse": relative,
                "mean_relative_rmse": {split: round(float(np.mean(v)), 4) for split, v in relative.items()},
            }
        )
    return composites


def markdown(result: dict[str, Any], split: str = "test") -> str:
    """One table per scenario: a row per model and form, a column per target, then the mean."""
    targets = result["targets"]
    lines = [
        f"| {result['scenario']} ({split}) | " + " | ".join(targets) + " | mean | train s |",
        "| --- |" + " ---: |" * (len(targets) + 2),
    ]
    for run in result["runs"]:
        cells = " | ".join(f"{value:.3f}" for value in run["relative_rmse"][split])
        mean = run["mean_relative_rmse"][split]
        lines.append(f"| {run['model_type']} {run['form']} | {cells} | {mean:.3f} | {run['train_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", default=["default", "level_shift"])
    model_types = [*NETWORK_MODEL_TYPES, "LIGHTGBM", *STATISTICAL_MODEL_TYPES, "PROPHET", "SEASONAL_NAIVE"]
    parser.add_argument("--models", nargs="+", default=["GRU", "LSTM"], choices=model_types)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    parser.add_argument("--rows", type=int, default=16_000, help="train-file rows (split into train/validation)")
    parser.add_argument("--test-rows", type=int, default=4_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42, help="the networks' seed (weights and batch order)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": os.getloadavg(),
        "scenarios": [scenario_quality(scenario, args) for scenario in args.scenarios],
        "load_average_after": os.getloadavg(),
    }
    for result in results["scenarios"]:
        print(markdown(result, "validation"), markdown(result), sep="\n\n", end="\n\n")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
