"""What `flts upload`, `flts status` and `make demo` print while a lineage runs: each stage and epoch once."""

from __future__ import annotations

import io

from rich.console import Console

from flts.demo import StageFollower, epoch_line, print_leaderboard


def test_an_epoch_line_has_the_epoch_of_its_budget_a_bar_the_losses_and_the_time():
    line = epoch_line({"epoch": 3.0, "train_loss": 0.0123, "val_loss": 0.02, "elapsed_seconds": 12.34}, 10)
    assert line == "epoch 3/10 ███------- train_loss 0.0123, val_loss 0.02, 12.3 s"
    assert epoch_line({"epoch": 2.0}, None) == "epoch 2 "


def test_the_follower_prints_each_stage_and_each_epoch_once():
    output = io.StringIO()
    follower = StageFollower(Console(file=output, width=200))
    running = {
        "preprocessed": {"rows": {"train": 100}, "max_epochs": 2},
        "training": [{"model_type": "GRU", "status": "RUNNING", "progress": {"epoch": 1.0, "train_loss": 0.5}}],
    }
    follower(running)
    follower(running)
    running["training"][0]["progress"] = {"epoch": 2.0, "train_loss": 0.25}
    follower(running)
    follower({**running, "champion": {"model_type": "GRU"}})
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
    status = {
        "config_hash": "c" * 64,
        "training": [{"run_id": "p", "metrics": {}, "seconds": 1.0}, {"run_id": "g", "metrics": {}, "seconds": 9.0}],
        "leaderboard": [
            {"model_type": "PROPHET", "run_id": "p", "score": 0.1, "servable": False, "not_servable_because": "why"},
            {"model_type": "GRU", "run_id": "g", "score": 0.2, "servable": True},
        ],
        "champion": {"model_type": "GRU", "model_version": "1", "run_id": "g", "score": 0.2, "reason": "r"},
    }
    print_leaderboard(Console(file=output, width=200), status)
    rows = [line for line in output.getvalue().splitlines() if "PROPHET" in line or "GRU" in line]
    assert rows[0].rstrip(" │").endswith("no") and rows[1].rstrip(" │").endswith("yes")
    assert "PROPHET cannot be served: why" in output.getvalue()
