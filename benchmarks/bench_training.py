"""Training and prediction benchmark on the full-size bundled dataset (DESIGN.md, "Performance targets").

Times, on the full-size synthetic LTE data (16k train rows, 11 targets, 16 features, 2-min grid):
GRU and LSTM for 10 epochs on one thread each, alone and both at once in two processes (the
deployment shape: one trainer per core), one-batch prediction throughput, and Prophet on every
target. Each training runs in a fresh process; its figures exclude interpreter start-up and
imports, which are reported separately.

    .venv/bin/python benchmarks/bench_training.py --output bench_training.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()

from flts.config import PipelineConfig  # noqa: E402  (imports are part of what is timed)
from flts.data.generate import generate_lte_dataset  # noqa: E402
from flts.data.preprocess import ProcessedDataset, preprocess  # noqa: E402
from flts.data.windows import Windows, make_windows  # noqa: E402
from flts.models.base import WindowLayout  # noqa: E402
from flts.models.baselines import PersistenceForecaster  # noqa: E402
from flts.scoring import forecast_metrics  # noqa: E402

TARGET_SECONDS = 60.0


def bundled_dataset(
    train_rows: int, test_rows: int, scenario: str = "default"
) -> tuple[PipelineConfig, ProcessedDataset, dict[str, Windows]]:
    """The generated dataset preprocessed and windowed as the pipeline does it (default config)."""
    config = PipelineConfig()
    train, test = generate_lte_dataset(train_rows=train_rows, test_rows=test_rows, scenario=scenario)
    processed = preprocess(train, test, config)
    meta = processed.metadata
    windows = {
        name: make_windows(
            getattr(processed, name),
            meta.time_column,
            meta.feature_columns,
            meta.target_columns,
            config.windows.input_seq_len,
            config.windows.output_seq_len,
        )
        for name in ("train", "validation", "test")
    }
    return config, processed, windows


def window_layout(processed: ProcessedDataset, config: PipelineConfig) -> WindowLayout:
    meta = processed.metadata
    return WindowLayout.build(
        meta.feature_columns, meta.target_columns, config.windows.input_seq_len, config.windows.output_seq_len
    )


def _test_scores(model: Any, windows: Windows, targets: list[str]) -> dict[str, float]:
    metrics = forecast_metrics(windows.targets, model.predict(windows.inputs, windows.target_times), targets)
    return {key: round(metrics[f"test_{key}"], 6) for key in ("mae", "rmse", "mse")}


def _throughput(model: Any, windows: Windows, repeats: int = 5) -> float:
    """Windows per second forecasting the whole test split in one batch (best of `repeats`)."""
    model.predict(windows.inputs, windows.target_times)
    best = min(_timed(lambda: model.predict(windows.inputs, windows.target_times)) for _ in range(repeats))
    return len(windows) / best


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def train_worker(model_type: str, args: argparse.Namespace) -> dict[str, Any]:
    """One GRU/LSTM training in this process (the benchmark runs it in a fresh one)."""
    import torch

    from flts.models.recurrent import train_recurrent

    config, processed, windows = bundled_dataset(args.rows, args.test_rows)
    layout = window_layout(processed, config)
    recurrent = config.models.recurrent.model_copy(update={"epochs": args.epochs, "early_stopping_patience": 0})
    ready = time.perf_counter()
    cpu_before = time.process_time()
    model, history = train_recurrent(
        model_type,  # type: ignore[arg-type]
        windows["train"],
        windows["validation"],
        layout,
        recurrent,
        device=args.device,
        num_threads=args.threads,
    )
    train_seconds = time.perf_counter() - ready
    return {
        "model_type": model_type,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "epochs": len(history),
        "train_windows": len(windows["train"]),
        "train_s": round(train_seconds, 2),
        "train_cpu_s": round(time.process_time() - cpu_before, 2),
        "epoch_s": [round(record["seconds"], 2) for record in history],
        "startup_and_data_s": round(ready - STARTED, 2),
        "val_loss": [round(record["val_loss"], 6) for record in history],
        "test": _test_scores(model, windows["test"], list(layout.target_columns)),
        "predict_windows_per_s": round(_throughput(model, windows["test"])),
    }


def _spawn_workers(model_types: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start one fresh process per model type at the same time and collect their JSON results."""
    command = [sys.executable, __file__, "--rows", str(args.rows), "--test-rows", str(args.test_rows)]
    command += ["--epochs", str(args.epochs), "--threads", str(args.threads), "--device", args.device]
    started = time.perf_counter()
    processes = [
        subprocess.Popen([*command, "--worker", model_type], stdout=subprocess.PIPE, text=True)
        for model_type in model_types
    ]
    results = []
    for process in processes:
        stdout, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"benchmark worker failed with exit code {process.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    for result in results:
        result["all_processes_wall_s"] = round(time.perf_counter() - started, 2)
    return results


def prophet_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import_started = time.perf_counter()
    from flts.models.prophet import fit_prophet

    import_seconds = time.perf_counter() - import_started
    config, processed, windows = bundled_dataset(args.rows, args.test_rows)
    meta = processed.metadata
    layout = window_layout(processed, config)
    cpu_before = time.process_time()
    started = time.perf_counter()
    model = fit_prophet(
        processed.train,
        meta.time_column,
        meta.target_columns,
        config.models.prophet,
        workers=args.prophet_workers,
        layout=layout,
    )
    fit_seconds = time.perf_counter() - started
    predict_seconds = _timed(lambda: model.predict(windows["test"].inputs, windows["test"].target_times))
    return {
        "targets": len(meta.target_columns),
        "fit_rows": model.params["fit_rows"],
        "workers": args.prophet_workers,
        "import_s": round(import_seconds, 2),
        "fit_s": round(fit_seconds, 2),
        "fit_parent_cpu_s": round(time.process_time() - cpu_before, 2),
        "predict_test_s": round(predict_seconds, 2),
        "test": _test_scores(model, windows["test"], meta.target_columns),
    }


def _row(name: str, seconds: float | None, target: float | None, note: str) -> str:
    figure = "-" if seconds is None else f"{seconds:8.1f}"
    verdict = "" if target is None or seconds is None else ("ok" if seconds <= target else "MISSED")
    return f"{name:<34} {figure:>8}  {'' if target is None else f'<= {target:.0f}':>6}  {verdict:<6} {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--rows", type=int, default=16_000, help="train-file rows (split into train/validation)")
    parser.add_argument("--test-rows", type=int, default=4_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prophet-workers", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["alone", "concurrent", "prophet"])
    parser.add_argument("--worker", choices=["GRU", "LSTM"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(train_worker(args.worker, args)))
        return

    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": os.getloadavg(),
    }
    if "alone" not in args.skip:
        results["alone"] = [_spawn_workers([model_type], args)[0] for model_type in ("GRU", "LSTM")]
    if "concurrent" not in args.skip:
        results["concurrent"] = _spawn_workers(["GRU", "LSTM"], args)
    if "prophet" not in args.skip:
        results["prophet"] = prophet_benchmark(args)
    config, processed, windows = bundled_dataset(args.rows, args.test_rows)
    persistence = PersistenceForecaster(window_layout(processed, config))
    results["persistence"] = {"test": _test_scores(persistence, windows["test"], processed.metadata.target_columns)}
    results["load_average_after"] = os.getloadavg()

    lines = [f"{'benchmark':<34} {'seconds':>8}  {'target':>6}  {'':<6} note"]
    for group in ("alone", "concurrent"):
        for run in results.get(group, []):
            note = (
                f"{run['train_cpu_s']:.1f} cpu-s, {run['threads']} thread(s), {run['epochs']} epochs, "
                f"test rmse {run['test']['rmse']:.4f}"
            )
            lines.append(_row(f"{run['model_type']} train ({group})", run["train_s"], TARGET_SECONDS, note))
    for run in results.get("alone", []):
        lines.append(
            _row(f"{run['model_type']} predict, one batch", None, None, f"{run['predict_windows_per_s']} windows/s")
        )
    if "prophet" in results:
        prophet = results["prophet"]
        note = (
            f"{prophet['targets']} targets x {prophet['fit_rows']} rows, {prophet['workers']} workers, "
            f"test rmse {prophet['test']['rmse']:.4f}"
        )
        lines.append(_row("Prophet fit (all targets)", prophet["fit_s"], TARGET_SECONDS, note))
    lines.append(_row("persistence", None, None, f"test rmse {results['persistence']['test']['rmse']:.4f}"))
    load = results["load_average_before"][0], results["load_average_after"][0]
    lines.append(f"load average (1 min) before/after: {load[0]:.1f}/{load[1]:.1f} on {os.cpu_count()} cores")
    print("\n".join(lines))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
