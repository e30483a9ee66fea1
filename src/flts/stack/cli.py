"""`flts stack up|down|status|env|versions`: the local stack from the command line."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer
from rich.console import Console

from flts.stack.config import StackConfig, stack_environment
from flts.stack.install import InstallError
from flts.stack.manager import StackError, down, print_status, status, up, versions

app = typer.Typer(help="The local stack: Apache Kafka (KRaft), MinIO and an MLflow server as local processes.")
console = Console()


def _clean_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Show a failing part's message (with its log tail) instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (StackError, InstallError) as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from exc

    return wrapper


@app.command("up")
@_clean_errors
def up_command(
    services: Annotated[bool, typer.Option(help="Also start every pipeline service as a process.")] = False,
) -> None:
    """Start Kafka, MinIO and MLflow (what is already running is left alone), create topics and buckets."""
    up(StackConfig(), console, services=services)


@app.command("down")
@_clean_errors
def down_command() -> None:
    """Stop the services and every part of the stack, and wait until their ports are free."""
    down(StackConfig(), console)


@app.command("status")
def status_command() -> None:
    """Each part: running or stopped, pid, endpoint, version, memory."""
    statuses = status(StackConfig())
    print_status(statuses, console)
    if any(s.state != "running" for s in statuses):
        raise typer.Exit(3)


@app.command("env")
def env_command() -> None:
    """Print `export` lines for the variables services need: eval "$(flts stack env)"."""
    for key, value in stack_environment(StackConfig()).items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command("versions")
def versions_command() -> None:
    """Installed versions of Apache Kafka, MinIO and MLflow."""
    for name, version in versions(StackConfig()).items():
        typer.echo(f"{name}: {version}")
