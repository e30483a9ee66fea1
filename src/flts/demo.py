"""`make demo`: the whole pipeline on the bundled dataset, through real Kafka, MinIO and MLflow.

stack up -> services up -> generate the dataset -> upload through the gateway -> follow every
stage -> leaderboard, champion and a forecast from /predict, with the wall time of each stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from flts.client import FltsClient, window_request
from flts.config import load_pipeline_config
from flts.data.generate import write_dataset
from flts.records import LineageStatus
from flts.stack.config import StackConfig

SCORE_COLUMNS = ("test_rmse", "test_mae", "test_smape", "test_mase", "test_rmse_original")


def run_demo(
    config: StackConfig,
    console: Console,
    train_rows: int = 16_000,
    test_rows: int = 4_000,
    timeout: float = 900.0,
) -> dict[str, Any]:
    from flts.stack.manager import up

    timings: dict[str, float] = {}
    started = time.monotonic()
    statuses = up(config, console, services=True)
    timings["stack and services up"] = time.monotonic() - started
    console.print("[bold]Versions[/]: " + ", ".join(f"{s.title} {s.version}" for s in statuses if s.version))

    data_dir = config.state_dir / "demo-data"
    train_path, test_path = write_dataset(data_dir, train_rows=train_rows, test_rows=test_rows)
    console.print(f"Bundled dataset generated: {train_path} ({train_rows} rows), {test_path} ({test_rows} rows)")

    client = FltsClient(config.gateway_url, config.inference_url)
    uploaded_at = time.monotonic()
    upload = client.upload(train_path, test_path)
    console.print(f"Uploaded as dataset {upload['dataset_id']}; lineage [bold]{upload['config_hash'][:16]}[/]")
    follower = StageFollower(console)

    def first_served(_status: LineageStatus) -> None:
        timings.setdefault("upload -> first forecast served", time.monotonic() - uploaded_at)

    status = client.wait_for_champion(
        upload["config_hash"], timeout=timeout, on_progress=follower, on_served=first_served, poll_seconds=1.0
    )
    timings["upload -> champion serving"] = time.monotonic() - uploaded_at
    timings.update({f"  {stage}": at for stage, at in follower.seen.items()})

    print_leaderboard(console, status)
    forecast = client.predict(window_request(pd.read_csv(test_path), _rows_needed(client)))
    print_forecast(console, forecast)
    table = Table(title="Wall time (seconds; indented stages are measured from the upload)", title_justify="left")
    table.add_column("stage")
    table.add_column("s", justify="right")
    for stage, seconds in timings.items():
        table.add_row(stage, f"{seconds:.1f}")
    console.print(table)
    console.print(
        f"Services keep running: the status page {config.gateway_url}/ui, gateway {config.gateway_url}/docs, "
        f"inference {config.inference_url}/docs. "
        "Stop everything with [bold]flts stack down[/]."
    )
    return {"status": status, "forecast": forecast, "timings": timings}


class StageFollower:
    """Prints each stage of a lineage once, as the polled status shows it: preprocessing, every model's
    start, epochs and end, eval's decision. Seconds are counted from the follower's creation."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self.seen: dict[str, float] = {}

    def _once(self, key: str, line: str) -> None:
        if key not in self.seen:
            self.seen[key] = time.monotonic() - self.started
            self.console.print(f"  [{self.seen[key]:6.1f}s] {line}")

    def __call__(self, status: LineageStatus | None) -> None:
        if not status:
            return
        preprocessed = status.preprocessed
        if preprocessed:
            self._once("preprocessed", f"preprocessed: {preprocessed.rows}")
        max_epochs = preprocessed.max_epochs if preprocessed else None
        for run in status.training:
            if "epoch" in run.progress:
                epoch = int(run.progress["epoch"])
                self._once(
                    f"{run.model_type} epoch {epoch}", f"{run.model_type:<15} {epoch_line(run.progress, max_epochs)}"
                )
            self._once(f"{run.model_type} {run.status}", f"{run.model_type:<15} {run.status}")
        outcome, champion = status.decision.outcome, status.champion
        if champion and champion.interim:
            self._once(
                f"interim {champion.model_type}",
                f"interim champion: {champion.model_type} (the best finished so far, served while others train)",
            )
        elif champion:
            self._once("champion", f"champion promoted: {champion.model_type}")
        elif outcome:
            self._once(f"decided {outcome}", f"decided: {outcome} ({status.decision.reason})")


def epoch_line(progress: dict[str, float], max_epochs: int | None, bar_width: int = 10) -> str:
    """`epoch 3/10 ███------- train_loss 0.01, val_loss 0.02, 12.3 s`: one training progress report."""
    epoch = int(progress["epoch"])
    done = min(bar_width, round(bar_width * epoch / max_epochs)) if max_epochs else 0
    bar = f"/{max_epochs} {'█' * done}{'-' * (bar_width - done)}" if max_epochs else ""
    losses = ", ".join(f"{k} {progress[k]:.4g}" for k in ("train_loss", "val_loss") if k in progress)
    elapsed = f", {progress['elapsed_seconds']:.1f} s" if "elapsed_seconds" in progress else ""
    return f"epoch {epoch}{bar} {losses}{elapsed}"


def _rows_needed(client: FltsClient) -> int:
    info = client.model_info()
    return int(info["rows_needed"]) if info else load_pipeline_config().windows.input_seq_len


def print_leaderboard(console: Console, status: LineageStatus) -> None:
    metrics = {run.run_id: run.metrics for run in status.training}
    board = status.leaderboard
    persistence = next((c for c in board if c.model_type == "PERSISTENCE"), None)
    table = Table(title=f"Leaderboard for lineage {status.config_hash[:16]}", title_justify="left")
    for column in ("rank", "model", "score", *SCORE_COLUMNS, "vs persistence", "columns won", "train s", "servable"):
        table.add_column(column.removeprefix("test_"), justify="right")
    seconds = {run.run_id: run.seconds for run in status.training}
    for rank, candidate in enumerate(board, start=1):
        values = metrics.get(candidate.run_id, {})
        relative = f"{candidate.score / persistence.score:.3f}" if persistence and persistence.score else "-"
        table.add_row(
            str(rank),
            candidate.model_type,
            f"{candidate.score:.5f}",
            *(f"{values[c]:.4g}" if c in values else "-" for c in SCORE_COLUMNS),
            relative,
            str(len(candidate.column_wins)),
            f"{seconds[candidate.run_id]:.1f}" if seconds.get(candidate.run_id) else "-",
            "yes" if candidate.servable else "no",
        )
    console.print(table)
    for candidate in board:
        if candidate.not_servable_because:
            console.print(f"{candidate.model_type} cannot be served: {candidate.not_servable_because}")
    winners = status.decision.column_winners
    if winners:
        console.print("Best per column (validation): " + ", ".join(f"{c} {m}" for c, m in winners.items()))
    served = status.decision.column_composite
    if served.score is not None and served.score_vs_persistence is not None:
        console.print(
            f"Served column by column: test score {served.score:.5f}, {served.score_vs_persistence:.3f} x persistence's"
            + (
                f", {served.score_vs_champion:.3f} x the champion's alone"
                if served.score_vs_champion is not None
                else ""
            )
        )
    champion = status.champion
    if champion is not None:
        console.print(
            f"[bold green]Champion[/]: {champion.model_type} version {champion.model_version} "
            f"(run {champion.run_id}), score {champion.score:.5f}; {champion.reason}"
        )


def print_forecast(console: Console, forecast: dict[str, Any]) -> None:
    predictions = forecast["predictions"]
    table = Table(
        title=f"/predict: {forecast['model_type']} v{forecast['model_version']} (run {forecast['run_id'][:12]})",
        title_justify="left",
    )
    table.add_column("column")
    for row in predictions:
        table.add_column(row["ts"], justify="right")
    for column in (c for c in predictions[0] if c != "ts"):
        table.add_row(column, *(f"{row[column]:.4g}" for row in predictions))
    console.print(table)


def upload_demo_dataset(gateway_url: str, directory: Path, wait_seconds: float = 300.0) -> dict[str, Any]:
    """For docker compose's one-shot uploader: generate the dataset and upload it once the gateway answers."""
    train_path, test_path = write_dataset(directory)
    client = FltsClient(gateway_url, inference_url="")
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return client.upload(train_path, test_path)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)
