"""What `flts upload`, `flts status` and `make demo` print while a lineage runs: each stage and epoch once."""

from __future__ import annotations

import io

from rich.console import Console

from flts.demo import StageFollower, epoch_line, print_leaderboard
from flts.records import LineageStatus

DECIDING = {"ready": False, "reason": "waiting", "outcome": None, "column_winners": {}, "column_composite": {}}
PREPROCESSED = {
    "rows": {"train": 100},
    "feature_columns": ["x"],
    "target_columns": ["x"],
    "frequency": "2min",
    "sampling": {},
    "metadata_uri": "s3://processed-data/global/c/metadata.json",
    "max_epochs": 2,
}


def _status(**fields: object) -> LineageStatus:
    """A lineage as `GET /runs/{config_hash}` answers it, with the fields a test sets."""
    empty = {"config_hash": "c" * 64, "identifier": "global", "preprocessed": None, "training": [], "leaderboard": []}
    return LineageStatus.model_validate({**empty, "decision": DECIDING, "champion": None, **fields})


def _run(model_type: str, run_id: str, status: str = "FINISHED", **fields: object) -> dict[str, object]:
    started = {"error": None, "started_at_ms": 0, "seconds": None, "metrics": {}, "progress": {}}
    return {"model_type": model_type, "run_id": run_id, "status": status, **started, **fields}


def _champion(model_type: str, run_id: str, score: float) -> dict[str, object]:
    return {
        "config_hash": "c" * 64, "identifier": "global", "model_type": model_type, "run_id": run_id,
        "registered_model": "flts-global", "model_version": "1", "score": score, "reason": "r",
        "decided_at": "2026-12-02T04:05:00+00:00", "decided_at_ms": 1,
    }  # fmt: skip


def test_an_epoch_line_has_the_epoch_of_its_budget_a_bar_the_losses_and_the_time():
    line = epoch_line({"epoch": 3.0, "train_loss": 0.0123, "val_loss": 0.02, "elapsed_seconds": 12.34}, 10)
    assert line == "epoch 3/10 ███------- train_loss 0.0123, val_loss 0.02, 12.3 s"
    assert epoch_line({"epoch": 2.0}, None) == "epoch 2 "


def test_the_follower_prints_each_stage_and_each_epoch_once():
    output = io.StringIO()
    follower = StageFollower(Console(file=output, width=200))
    first = _run("GRU", "g", "RUNNING", progress={"epoch": 1.0, "train_loss": 0.5})
    second = _run("GRU", "g", "RUNNING", progress={"epoch": 2.0, "train_loss": 0.25})
    follower(_status(preprocessed=PREPROCESSED, training=[first]))
    follower(_status(preprocessed=PREPROCESSED, training=[first]))
    follower(_status(preprocessed=PREPROCESSED, training=[second]))
    follower(_status(preprocessed=PREPROCESSED, training=[second], champion=_champion("GRU", "g", 0.2)))
    lines = [line.split("] ", 1)[1] for line in output.getvalue().splitlines()]
    assert lines == [
        "preprocessed: {'train': 100}",
        "GRU             epoch 1/2 █████----- train_loss 0.5",
        "GRU             RUNNING",
        "GRU             epoch 2/2 ██████████ train_loss 0.25",
        "champion promoted: GRU",
    ]


def test_the_leaderboard_says_which_models_cannot_be_served_and_why():
    output = io.StringIO()
    status = _status(
        training=[_run("PROPHET", "p", seconds=1.0), _run("GRU", "g", seconds=9.0)],
        leaderboard=[
            {"model_type": "PROPHET", "run_id": "p", "score": 0.1, "servable": False, "not_servable_because": "why"},
            {"model_type": "GRU", "run_id": "g", "score": 0.2, "servable": True},
        ],
        champion=_champion("GRU", "g", 0.2),
    )
    print_leaderboard(Console(file=output, width=200), status)
    rows = [line for line in output.getvalue().splitlines() if "PROPHET" in line or "GRU" in line]
    assert rows[0].rstrip(" │").endswith("no") and rows[1].rstrip(" │").endswith("yes")
    assert "PROPHET cannot be served: why" in output.getvalue()
