"""Bring the local stack up (idempotently), report on it, and take it down leaving nothing behind."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from rich.console import Console

from flts.stack.config import StackConfig, common_settings, kafka_password, service_credentials
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
from flts.stack.services import service_parts


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
    """The infrastructure: Kafka, MinIO, MLflow."""
    return {part.name: part for part in (KafkaPart(config), MinioPart(config), MlflowPart(config))}


def running_pid(part: Part) -> int | None:
    """The pid of this stack's process for ``part``, if one is alive."""
    pid = read_pid(part.pid_file)
    if pid is not None and alive(pid) and owned_by(pid, part.home):
        return pid
    return None


def status(config: StackConfig | None = None) -> list[PartStatus]:
    """Every infrastructure part, plus each service that was started and not stopped with `down`."""
    config = config or StackConfig()
    started_services = [part for part in service_parts(config).values() if part.pid_file.exists()]
    result = []
    for part in [*parts(config).values(), *started_services]:
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


def up(config: StackConfig | None = None, console: Console | None = None, services: bool = False) -> list[PartStatus]:
    """Start whatever is not running, wait until every part answers, create topics, buckets and S3 users.

    With ``services`` the pipeline's services start too, once the infrastructure answers.
    """
    config = config or StackConfig()
    console = console or Console()
    started = time.monotonic()
    for directory in (config.state_dir, config.logs_dir, config.run_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    infrastructure = parts(config)
    wanted: dict[str, Part] = {**infrastructure, **(service_parts(config) if services else {})}
    pids = {name: running_pid(part) for name, part in wanted.items()}
    to_start = [part for name, part in wanted.items() if pids[name] is None]
    for part in to_start:
        busy = [port for port in part.ports if port_open(config.host, port)]
        if busy:
            raise StackError(f"{part.name}: port(s) {busy} already in use by a process this stack did not start")
    for part in to_start:
        part.install(console)

    offsets: dict[str, int] = {}

    def launch(part: Part) -> None:
        if pids[part.name] is None:
            part.configure()
            offsets[part.name] = part.log_file.stat().st_size if part.log_file.exists() else 0
            pids[part.name] = spawn(part.command(), part.env(), part.log_file, part.home)
            part.pid_file.write_text(f"{pids[part.name]}\n")

    def wait_ready(part: Part) -> None:
        pid = pids[part.name]
        assert pid is not None
        wait_for(lambda: not alive(pid) or part.ready(), config.start_timeout_s, interval=0.25)
        if alive(pid) and part.ready():
            return
        problem = f"did not answer within {config.start_timeout_s:.0f}s" if alive(pid) else "exited while starting"
        log_tail = tail(part.log_file, offsets.get(part.name, 0))
        raise StackError(f"{part.name} {problem}; last lines of {part.log_file}:\n{log_tail}")

    from flts.kafka import ensure_topics
    from flts.kafka_users import SERVICES as KAFKA_SERVICES
    from flts.kafka_users import ensure_kafka_users, kafka_user
    from flts.storage import ObjectStore
    from flts.storage_users import SERVICES, ensure_service_users

    settings = common_settings(config)
    # MinIO answers in about a second; MLflow is the slowest to start, so it goes next, then Kafka.
    launch(infrastructure["minio"])
    wait_ready(infrastructure["minio"])
    ObjectStore(settings).ensure_buckets()  # MLflow's artifact bucket must exist before it starts
    ensure_service_users(settings, {s: service_credentials(config, s).secret_access_key for s in SERVICES})
    launch(infrastructure["mlflow"])
    launch(infrastructure["kafka"])
    wait_ready(infrastructure["kafka"])
    ensure_topics(settings)
    if config.kafka_sasl:
        ensure_kafka_users(settings, {s: kafka_password(config, kafka_user(s)) for s in KAFKA_SERVICES})
    wait_ready(infrastructure["mlflow"])
    services_wanted = [part for name, part in wanted.items() if name not in infrastructure]
    for part in services_wanted:
        launch(part)
    for part in services_wanted:
        wait_ready(part)

    result = status(config)
    print_status(result, console, title=f"FLTS local stack up in {time.monotonic() - started:.1f}s")
    return result


def down(config: StackConfig | None = None, console: Console | None = None) -> None:
    """Stop the services, then the infrastructure; wait until every port is free."""
    config = config or StackConfig()
    console = console or Console()
    stopped = []
    everything: list[Part] = []
    for layer in (list(service_parts(config).values()), list(parts(config).values())):
        stopped += _stop(layer, config.stop_grace_s, console)
        everything += layer
    ports = [(part.name, port) for part in everything for port in part.ports]
    if not wait_for(lambda: not any(port_open(config.host, port) for _, port in ports), 15):
        busy = [f"{name}:{port}" for name, port in ports if port_open(config.host, port)]
        raise StackError(f"ports still in use after stopping the stack (not started by it?): {busy}")
    console.print(f"FLTS local stack down ({', '.join(stopped) or 'nothing was running'} stopped)")


def down_services(config: StackConfig, console: Console) -> list[str]:
    """Stop the pipeline's services and leave the infrastructure running."""
    return _stop(list(service_parts(config).values()), config.stop_grace_s, console)


def kill_part(config: StackConfig, name: str) -> None:
    """SIGKILL one part or service (as a crashed pod or broker would die): no shutdown, no commit."""
    part = {**parts(config), **service_parts(config)}[name]
    pid = running_pid(part)
    if pid is not None:
        signal_group(pid, signal.SIGKILL)
        wait_for(lambda: not group_members(pid), 10)
        # A dying JVM can hold its listening sockets a moment after it stops being a process.
        wait_for(lambda: not any(port_open(config.host, port) for port in part.ports), 15)
    part.pid_file.unlink(missing_ok=True)


def stop_part(config: StackConfig, name: str, console: Console | None = None) -> None:
    """SIGTERM one part or service (an orderly shutdown, as a rolling restart would do); SIGKILL after the grace."""
    part = {**parts(config), **service_parts(config)}[name]
    _stop([part], config.stop_grace_s, console or Console(stderr=True))
    wait_for(lambda: not any(port_open(config.host, port) for port in part.ports), 15)


def _stop(layer: list[Part], grace: float, console: Console) -> list[str]:
    """SIGTERM each part's process group, SIGKILL what is left after the grace; returns what was running."""
    groups = {part.name: pid for part in layer if (pid := running_pid(part)) is not None}
    for pgid in groups.values():
        signal_group(pgid, signal.SIGTERM)

    def all_gone() -> bool:
        return not any(group_members(pgid) for pgid in groups.values())

    if not wait_for(all_gone, grace):
        for name, pgid in groups.items():
            if group_members(pgid):
                console.print(f"[yellow]{name} ignored SIGTERM for {grace:.0f}s: killing it")
                signal_group(pgid, signal.SIGKILL)
        wait_for(all_gone, 10)
    for part in layer:
        part.pid_file.unlink(missing_ok=True)
    return list(groups)


def print_status(statuses: list[PartStatus], console: Console, title: str = "FLTS local stack") -> None:
    """One line per part, unwrapped, so it reads the same in a terminal and in a CI log."""
    console.print(f"[bold]{title}")
    colour = {"running": "green", "starting": "yellow", "stopped": "red"}
    for s in statuses:
        memory = f"{s.rss_bytes / 2**20:.0f} MiB" if s.rss_bytes else "-"
        ports = ",".join(map(str, s.ports))
        console.print(
            f"  {s.name:<11}[{colour[s.state]}]{s.state:<9}[/] pid {s.pid or '-':<8} {s.endpoint:<25} "
            f"ports {ports:<12} RSS {memory:>8}  {s.title} {s.version}",
            highlight=False,
            soft_wrap=True,
        )
