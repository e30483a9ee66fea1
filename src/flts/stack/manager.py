"""Bring the local stack up (idempotently), report on it, and take it down leaving nothing behind."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from flts.stack.config import StackConfig, common_settings, load_or_create_credentials
from flts.stack.parts import KafkaPart, MinioPart, MlflowPart, Part
from flts.stack.procs import (
    alive,
    group_members,
    owned_by,
    port_open,
    read_pid,
    rss_bytes,
    signal_group,
    spawn,
    tail,
    wait_for,
)


class StackError(RuntimeError):
    """A part of the stack failed to start or stop; the message names it and quotes its log."""


@dataclass(frozen=True)
class PartStatus:
    name: str
    title: str
    state: str  # running | starting | stopped
    pid: int | None
    ports: tuple[int, ...]
    endpoint: str
    version: str
    rss_bytes: int | None


def parts(config: StackConfig) -> dict[str, Part]:
    credentials = load_or_create_credentials(config)
    return {
        part.name: part
        for part in (
            KafkaPart(config, credentials),
            MinioPart(config, credentials),
            MlflowPart(config, credentials),
        )
    }


def running_pid(part: Part) -> int | None:
    """The pid of this stack's process for ``part``, if one is alive."""
    pid = read_pid(part.pid_file)
    if pid is not None and alive(pid) and owned_by(pid, part.marker):
        return pid
    return None


def status(config: StackConfig | None = None) -> list[PartStatus]:
    config = config or StackConfig()
    result = []
    for part in parts(config).values():
        pid = running_pid(part)
        ready = pid is not None and part.ready()
        result.append(
            PartStatus(
                name=part.name,
                title=part.title,
                state="running" if ready else "starting" if pid else "stopped",
                pid=pid,
                ports=part.ports,
                endpoint=part.endpoint,
                version=part.running_version() if ready else part.version(),
                rss_bytes=rss_bytes(pid) if pid else None,
            )
        )
    return result


def versions(config: StackConfig | None = None) -> dict[str, str]:
    """Installed versions of the stack's parts (without starting anything)."""
    return {name: part.version() for name, part in parts(config or StackConfig()).items()}


def up(config: StackConfig | None = None, console: Console | None = None) -> list[PartStatus]:
    """Start whatever is not running, wait until every part answers, create topics and buckets."""
    config = config or StackConfig()
    console = console or Console()
    started = time.monotonic()
    for directory in (config.state_dir, config.logs_dir, config.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    by_name = parts(config)
    pids = {name: running_pid(part) for name, part in by_name.items()}
    to_start = [part for name, part in by_name.items() if pids[name] is None]
    for part in to_start:
        busy = [port for port in part.ports if port_open(config.host, port)]
        if busy:
            raise StackError(
                f"{part.name}: port(s) {busy} already in use by a process this stack did not start"
            )
    for part in to_start:
        part.prepare(console)

    offsets: dict[str, int] = {}

    def launch(part: Part) -> None:
        if pids[part.name] is None:
            offsets[part.name] = part.log_file.stat().st_size if part.log_file.exists() else 0
            pids[part.name] = spawn(part.command(), part.env(), part.log_file, part.home)
            part.pid_file.write_text(f"{pids[part.name]}\n")

    def wait_ready(part: Part) -> None:
        pid = pids[part.name]
        assert pid is not None
        if not wait_for(lambda: part.ready() or not alive(pid), config.start_timeout_s, interval=0.25):
            raise StackError(
                f"{part.name} did not answer within {config.start_timeout_s:.0f}s; "
                f"last lines of {part.log_file}:\n{tail(part.log_file, offsets.get(part.name, 0))}"
            )
        if not part.ready():
            raise StackError(
                f"{part.name} exited while starting; last lines of {part.log_file}:\n"
                f"{tail(part.log_file, offsets.get(part.name, 0))}"
            )

    from flts.kafka import ensure_topics
    from flts.storage import ObjectStore

    settings = common_settings(config)
    launch(by_name["kafka"])
    launch(by_name["minio"])
    wait_ready(by_name["minio"])
    ObjectStore(settings).ensure_buckets()  # MLflow's artifact bucket must exist before it starts
    launch(by_name["mlflow"])
    wait_ready(by_name["kafka"])
    ensure_topics(settings)
    wait_ready(by_name["mlflow"])

    result = status(config)
    print_status(result, console, title=f"FLTS local stack up in {time.monotonic() - started:.1f}s")
    return result


def down(config: StackConfig | None = None, console: Console | None = None) -> None:
    """SIGTERM every part's process group, SIGKILL what is left after the grace, wait for free ports."""
    config = config or StackConfig()
    console = console or Console()
    by_name = parts(config)
    groups = {name: pid for name, part in by_name.items() if (pid := running_pid(part)) is not None}
    for pgid in groups.values():
        signal_group(pgid, signal.SIGTERM)

    def all_gone() -> bool:
        return not any(group_members(pgid) for pgid in groups.values())

    if not wait_for(all_gone, config.stop_grace_s):
        for name, pgid in groups.items():
            if group_members(pgid):
                console.print(f"[yellow]{name} ignored SIGTERM for {config.stop_grace_s:.0f}s: killing it")
                signal_group(pgid, signal.SIGKILL)
        wait_for(all_gone, 10)
    for part in by_name.values():
        part.pid_file.unlink(missing_ok=True)
    ports = [(part.name, port) for part in by_name.values() for port in part.ports]
    if not wait_for(lambda: not any(port_open(config.host, port) for _, port in ports), 15):
        busy = [f"{name}:{port}" for name, port in ports if port_open(config.host, port)]
        raise StackError(f"ports still in use after stopping the stack (not started by it?): {busy}")
    console.print(f"FLTS local stack down ({', '.join(groups) or 'nothing was running'} stopped)")


def print_status(statuses: list[PartStatus], console: Console, title: str = "FLTS local stack") -> None:
    table = Table(title=title, title_justify="left")
    for column in ("part", "state", "pid", "endpoint", "ports", "version", "RSS"):
        table.add_column(column, overflow="fold")
    colour = {"running": "green", "starting": "yellow", "stopped": "red"}
    for s in statuses:
        table.add_row(
            s.name,
            f"[{colour[s.state]}]{s.state}",
            str(s.pid or "-"),
            s.endpoint,
            ",".join(map(str, s.ports)),
            s.version,
            f"{s.rss_bytes / 2**20:.0f} MiB" if s.rss_bytes else "-",
        )
    console.print(table)
