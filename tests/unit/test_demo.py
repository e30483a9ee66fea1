"""What `flts upload`, `flts status` and `make demo` print while a lineage runs: each stage and epoch once."""

from __future__ import annotations

import io

from rich.console import Console

from flts.demo import StageFollower, epoch_line


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
