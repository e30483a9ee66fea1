"""`flts`: the command line for the local stack, the demo, uploads and the bundled dataset."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flts.stack.cli import app as stack_app

app = typer.Typer(help="FLTS: a Kafka-driven forecasting pipeline.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
dead_letters_app = typer.Typer(help="The dead-letter topic: what failed and why; re-drive it after a fix.")
app.add_typer(dead_letters_app, name="dead-letters")
keys_app = typer.Typer(help="API keys of the gateway and inference (docs/security.md).")
app.add_typer(keys_app, name="keys")
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
    scenario: Annotated[
        str, typer.Option(help="default, level_shift, outages, uplink_bursts or idle (docs/models.md).")
    ] = "default",
) -> None:
    """Write the bundled (generated, deterministic) LTE dataset."""
    from flts.data.generate import write_dataset

    train, test = write_dataset(directory, train_rows=train_rows, test_rows=test_rows, seed=seed, scenario=scenario)
    console.print(f"wrote {train} and {test}")


Gateway = Annotated[str, typer.Option(envvar="FLTS_GATEWAY_URL", help="The gateway's URL.")]
Inference = Annotated[str, typer.Option(envvar="FLTS_INFERENCE_URL", help="The inference service's URL.")]
IdentifierOption = Annotated[str, typer.Option(help="The series (base station, cell, customer).")]


@contextmanager
def _explained_http_errors(gateway: str, inference: str) -> Iterator[None]:
    """Turn connection errors and refusals into a line that says what to do next."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        url = getattr(getattr(exc, "request", None), "url", "")
        which = "inference" if inference and str(url).startswith(inference) else "gateway"
        console.print(
            f"[red]cannot reach the {which} at {url or gateway}[/] ({exc.__class__.__name__}). Is the stack up? "
            "Try [bold]flts stack status[/] (local), [bold]docker compose ps[/] or [bold]kubectl get pods[/]; "
            "or pass --gateway/--inference (FLTS_GATEWAY_URL/FLTS_INFERENCE_URL)."
        )
        raise typer.Exit(2) from exc
    except httpx.HTTPStatusError as exc:
        console.print(f"[red]{exc}[/]")
        if exc.response.status_code in (401, 403):
            console.print("Send a key scoped to this identifier: export FLTS_API_KEY=<key> (docs/security.md).")
        raise typer.Exit(1) from exc


@app.command()
def upload(
    train: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV of measurements.")],
    test: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Optional test CSV.")] = None,
    identifier: Annotated[str | None, typer.Option(help="The series this data belongs to.")] = None,
    force: Annotated[bool, typer.Option(help="Train again even if this lineage exists.")] = False,
    gateway: Gateway = "http://127.0.0.1:8000",
    inference: Inference = "http://127.0.0.1:8001",
    wait: Annotated[bool, typer.Option(help="Follow the lineage until its champion is served.")] = True,
    timeout: float = 900.0,
) -> None:
    """Upload your own CSV and follow it live: each stage and epoch as it happens, then the leaderboard."""
    from flts.client import FltsClient
    from flts.demo import StageFollower, print_leaderboard

    client = FltsClient(gateway, inference)
    with _explained_http_errors(gateway, inference):
        answer = client.upload(train, test, identifier, force)
        console.print(
            f"Uploaded as dataset {answer['dataset_id']} for [bold]{answer['identifier']}[/]; "
            f"lineage [bold]{answer['config_hash']}[/]\n"
            f"Watch it on the status page: {gateway}/ui/identifiers/{answer['identifier']}/lineages/"
            f"{answer['config_hash']}"
        )
        if not wait:
            return
        try:
            status = client.wait_for_champion(
                answer["config_hash"], answer["identifier"], timeout=timeout, on_progress=StageFollower(console)
            )
        except KeyboardInterrupt:
            console.print(
                "Stopped following; the pipeline goes on. Follow it again with "
                f"[bold]flts status {answer['config_hash']} --identifier {answer['identifier']}[/]"
            )
            raise typer.Exit(130) from None
        print_leaderboard(console, status)


@app.command()
def status(
    config_hash: Annotated[
        str | None,
        typer.Argument(help="The lineage (printed by upload; `flts runs` lists them). Default: the newest one."),
    ] = None,
    identifier: IdentifierOption = "global",
    gateway: Gateway = "http://127.0.0.1:8000",
    follow: Annotated[bool, typer.Option(help="Keep following until the lineage is decided.")] = False,
    timeout: float = 900.0,
) -> None:
    """A lineage's stages, every model's state and epochs, and the leaderboard (live with --follow)."""
    import time

    from flts.client import FltsClient
    from flts.demo import StageFollower, print_leaderboard

    client, follower = FltsClient(gateway, ""), StageFollower(console)
    deadline = time.monotonic() + timeout
    with _explained_http_errors(gateway, ""):
        if config_hash is None:
            lineages = client.lineages(identifier)
            if not lineages:
                console.print(f"[red]{identifier!r} has no lineage yet[/]; upload data with `flts upload FILE.csv`")
                raise typer.Exit(1)
            config_hash = lineages[0].config_hash
            console.print(f"The newest lineage of {identifier}: [bold]{config_hash}[/]")
        while True:
            lineage = client.lineage(config_hash, identifier)
            if lineage is None:
                console.print(
                    f"[red]no lineage {config_hash} for {identifier!r}[/]; `flts runs --identifier` lists them"
                )
                raise typer.Exit(1)
            follower(lineage)
            if lineage.decided or not follow or time.monotonic() > deadline:
                break
            time.sleep(2)
    if lineage.champion:
        print_leaderboard(console, lineage)
    else:
        console.print(f"decision: {lineage.decision.to_json()}")


@app.command()
def runs(identifier: IdentifierOption = "global", gateway: Gateway = "http://127.0.0.1:8000") -> None:
    """An identifier's lineages, newest first, with eval's outcome for each."""
    from rich.table import Table

    from flts.client import FltsClient

    with _explained_http_errors(gateway, ""):
        lineages = FltsClient(gateway, "").lineages(identifier)
    table = Table("lineage", "preprocessed at", "outcome", "reason", title=f"Lineages of {identifier}")
    for lineage in lineages:
        table.add_row(lineage.config_hash, lineage.preprocessed_at, lineage.outcome or "-", lineage.reason or "")
    console.print(table)


@app.command()
def champion(
    identifier: Annotated[str, typer.Argument(help="The series.")] = "global",
    inference: Inference = "http://127.0.0.1:8001",
) -> None:
    """What /predict serves for an identifier: model type, version, run, lineage, the window it needs."""
    from flts.client import FltsClient

    with _explained_http_errors("", inference):
        info = FltsClient("", inference).model_info(identifier, missing_ok=False)
    console.print_json(json.dumps(info))


@app.command()
def predict(
    identifier: IdentifierOption = "global",
    file: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="CSV whose last rows form the window (default: the latest rows known)."
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Steps to forecast (default: the model's horizon).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    inference: Inference = "http://127.0.0.1:8001",
) -> None:
    """A forecast from the identifier's champion, as a table (or --json): from the last rows of --file, or
    without it from the end of the champion's own data."""
    import pandas as pd

    from flts.client import FltsClient, window_request
    from flts.demo import print_forecast

    client = FltsClient("", inference)
    with _explained_http_errors("", inference):
        if file is None:
            body: dict = {"identifier": identifier}
        else:
            info = client.model_info(identifier, missing_ok=False)
            body = window_request(pd.read_csv(file), int(info["rows_needed"]), identifier)
        if steps:
            body["inference_length"] = steps
        forecast = client.predict(body)
    if as_json:
        console.print_json(json.dumps(forecast))
    else:
        print_forecast(console, forecast)


@app.command()
def plot(
    out: Annotated[Path, typer.Option(dir_okay=False, help="Where to write the picture: .svg, or .png (matplotlib).")],
    identifier: IdentifierOption = "global",
    target: Annotated[str | None, typer.Option(help="The column to draw (default: the first target).")] = None,
    config_hash: Annotated[str | None, typer.Option(help="The lineage (default: the champion's).")] = None,
    model: Annotated[str | None, typer.Option(help="Whose forecasts, e.g. GRU (default: the champion).")] = None,
    step: Annotated[int, typer.Option(min=1, help="Steps ahead (1 = the next step).")] = 1,
    start: Annotated[str | None, typer.Option(help="First time drawn (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option(help="Last time drawn (ISO 8601).")] = None,
    gateway: Gateway = "http://127.0.0.1:8000",
) -> None:
    """Draw the champion's forecasts on the test split against the actual values, persistence beside them."""
    from flts.client import FltsClient
    from flts.plot import forecast_figure, forecast_png

    if out.suffix.lower() not in (".svg", ".png"):
        console.print(f"[red]{out.name}: write an .svg (any browser opens it) or a .png[/]; e.g. --out forecast.svg")
        raise typer.Exit(2)
    query = {"target": target, "config_hash": config_hash, "model_type": model, "step": step}
    with _explained_http_errors(gateway, ""):
        answer = FltsClient(gateway, "").forecasts(identifier, **query, start=start, end=end)
    if out.suffix.lower() == ".svg":
        out.write_text(forecast_figure(answer))
    else:
        try:
            forecast_png(answer, out)
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
    drawn = len(answer["series"][0]["times"])
    console.print(
        f"wrote {out}: {answer['model_type']} vs actual for {answer['target']} ({drawn} times, "
        f"lineage {answer['config_hash'][:16]}); targets: {', '.join(answer['targets'])}"
    )


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
    """Create the topics, buckets, per-service S3 users and (with SASL) Kafka users and ACLs (idempotent): the
    one-shot init of compose and Helm."""
    from flts.kafka import ensure_topics
    from flts.kafka_users import SERVICES as KAFKA_SERVICES
    from flts.kafka_users import ensure_kafka_users
    from flts.settings import InitSettings
    from flts.storage import ObjectStore
    from flts.storage_users import SERVICES, ensure_service_users

    settings = InitSettings()
    ensure_topics(settings)
    ObjectStore(settings).ensure_buckets()
    users = ensure_service_users(settings, settings.service_s3_secrets(SERVICES))
    kafka_users = ensure_kafka_users(settings, settings.service_kafka_passwords(KAFKA_SERVICES))
    console.print(
        f"topics {settings.topics}, buckets {settings.buckets}, S3 users {users} and Kafka users {kafka_users} "
        "are in place"
    )


@dead_letters_app.command("list")
def dead_letters_list() -> None:
    """Every dead letter: where it came from, when and why (reads the topic; changes nothing)."""
    from rich.table import Table

    from flts.deadletters import list_letters
    from flts.settings import CommonSettings

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
def dead_letters_replay(
    skip_refused: Annotated[
        bool, typer.Option(help="Pass over letters naming a topic or group not the pipeline's (left unreplayed).")
    ] = False,
) -> None:
    """Re-publish every dead letter not replayed before to its source topic (idempotent: run it twice): only to the
    pipeline's own topics, each from the group that consumes it; it stops at any other letter."""
    from flts.deadletters import Letter, ReplayRefused, replay
    from flts.settings import CommonSettings

    def sent(letters: list[Letter]) -> None:
        for item in letters:
            console.print(f"replayed {item.position} -> {item.letter.source_topic} ({item.letter.reason[:120]})")
        console.print(f"{len(letters)} dead letter(s) replayed")

    try:
        replayed = replay(CommonSettings(), skip_refused=skip_refused)
    except ReplayRefused as refused:
        sent(refused.sent)
        console.print(f"[red]{refused}[/]")
        raise typer.Exit(1) from None
    sent(replayed.sent)
    for item, reason in replayed.skipped:
        console.print(f"[yellow]passed over {item.position}[/]: {reason}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who holds the key (a team, a service).")],
    identifier: Annotated[
        list[str] | None, typer.Option(help="An identifier (or pattern such as cell-*) it may use; repeatable.")
    ] = None,
    admin: Annotated[bool, typer.Option(help="Every identifier, global, force and cross-tenant listings.")] = False,
) -> None:
    """Print a new key (shown once, give it to its holder) and the entry for the keys file (its hash only)."""
    import yaml

    from flts.auth import KeysFile, Principal, key_hash, new_key

    if not identifier and not admin:
        console.print("[red]give at least one --identifier, or --admin[/]")
        raise typer.Exit(2)
    key = new_key()
    principal = Principal(name=name, sha256=key_hash(key), identifiers=tuple(identifier or ()), admin=admin)
    entry = KeysFile(principals=[principal]).model_dump(mode="json")
    typer.echo(f"# the key, for its holder only (FLTS_API_KEY): {key}", err=True)
    typer.echo(yaml.safe_dump(entry, sort_keys=False), nl=False)


if __name__ == "__main__":
    app()
