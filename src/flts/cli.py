"""`flts`: the command line for the local stack, the demo, uploads and the bundled dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flts.stack.cli import app as stack_app

app = typer.Typer(help="FLTS: a Kafka-driven forecasting pipeline.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
dead_letters_app = typer.Typer(help="The dead-letter topic: what failed and why; re-drive it after a fix.")
app.add_typer(dead_letters_app, name="dead-letters")
# Wide enough for the leaderboard when the output is a log rather than a terminal.
console = Console(width=None if sys.stdout.isatty() else 150)


@app.command()
def demo(
    train_rows: Annotated[int, typer.Option(help="Rows of the generated training file.")] = 16_000,
    test_rows: Annotated[int, typer.Option(help="Rows of the generated test file.")] = 4_000,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a served champion.")] = 900.0,
) -> None:
    """Run the whole pipeline on the bundled dataset and end with a leaderboard and a forecast."""
    from flts.demo import run_demo
    from flts.stack.config import StackConfig

    run_demo(StackConfig(), console, train_rows=train_rows, test_rows=test_rows, timeout=timeout)


@app.command()
def generate(
    directory: Annotated[Path, typer.Argument(help="Where to write train.csv and test.csv.")],
    train_rows: int = 16_000,
    test_rows: int = 4_000,
    seed: int = 7,
) -> None:
    """Write the bundled (generated, deterministic) LTE dataset."""
    from flts.data.generate import write_dataset

    train, test = write_dataset(directory, train_rows=train_rows, test_rows=test_rows, seed=seed)
    console.print(f"wrote {train} and {test}")


@app.command()
def upload(
    train: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV of measurements.")],
    test: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Optional test CSV.")] = None,
    identifier: Annotated[str | None, typer.Option(help="The series this data belongs to.")] = None,
    force: Annotated[bool, typer.Option(help="Train again even if this lineage exists.")] = False,
    gateway: Annotated[str, typer.Option(envvar="FLTS_GATEWAY_URL")] = "http://127.0.0.1:8000",
    inference: Annotated[str, typer.Option(envvar="FLTS_INFERENCE_URL")] = "http://127.0.0.1:8001",
    wait: Annotated[bool, typer.Option(help="Wait until the lineage's champion is served.")] = True,
    timeout: float = 900.0,
) -> None:
    """Upload your own CSV and (by default) wait for its champion, then print the leaderboard."""
    from flts.client import FltsClient
    from flts.demo import print_leaderboard

    client = FltsClient(gateway, inference)
    answer = client.upload(train, test, identifier, force)
    console.print_json(json.dumps(answer))
    if wait:
        status = client.wait_for_champion(answer["config_hash"], answer["identifier"], timeout=timeout)
        print_leaderboard(console, status)


@app.command("upload-demo")
def upload_demo(
    gateway: Annotated[str, typer.Option(envvar="FLTS_GATEWAY_URL")] = "http://gateway:8000",
    directory: Path = Path("/tmp/flts-demo"),
) -> None:
    """Generate the bundled dataset and upload it (docker compose's one-shot uploader)."""
    from flts.demo import upload_demo_dataset

    console.print_json(json.dumps(upload_demo_dataset(gateway, directory)))


@app.command()
def init() -> None:
    """Create the topics and buckets (idempotent): the one-shot init of docker compose and Helm."""
    from flts.config import CommonSettings
    from flts.kafka import ensure_topics
    from flts.storage import ObjectStore

    settings = CommonSettings()
    ensure_topics(settings)
    ObjectStore(settings).ensure_buckets()
    console.print(f"topics {settings.topics} and buckets {settings.buckets} are in place")


@dead_letters_app.command("list")
def dead_letters_list() -> None:
    """Every dead letter: where it came from, when and why (reads the topic; changes nothing)."""
    from rich.table import Table

    from flts.config import CommonSettings
    from flts.deadletters import list_letters

    letters = list_letters(CommonSettings())
    table = Table("dead letter", "source", "group", "failed at", "reason")
    for item in letters:
        letter = item.letter
        table.add_row(
            item.position,
            f"{letter.source_topic}/{letter.partition}:{letter.offset}",
            letter.consumer_group,
            letter.failed_at.isoformat(timespec="seconds"),
            letter.reason[:200],
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dead_letters_app.command("replay")
def dead_letters_replay() -> None:
    """Re-publish every dead letter not replayed before to its source topic (idempotent: run it twice)."""
    from flts.config import CommonSettings
    from flts.deadletters import replay

    sent = replay(CommonSettings())
    for item in sent:
        console.print(f"replayed {item.position} -> {item.letter.source_topic} ({item.letter.reason[:120]})")
    console.print(f"{len(sent)} dead letter(s) replayed")


if __name__ == "__main__":
    app()
