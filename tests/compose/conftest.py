"""Fixtures of the compose end-to-end tests: a real Docker engine, the images, one compose project.

The project is the repository's docker-compose.yaml, untouched, with docker-compose.sasl.yaml layered over
it (Kafka with SASL/SCRAM and every service's ACLs: the strictest way to run it, so the whole pipeline is
proven under least privilege), a generated env file (fresh credentials, free host ports, PyTorch from PyPI
since its CPU index is not reachable here). It is brought up once per module and always taken down with its
volumes; its logs are printed when a test fails.
"""

from __future__ import annotations

import secrets
import socket
import sys
import time
from collections.abc import Iterator

import pytest
from harness import COMPOSE_SASL_FILE, PROJECT, Compose, DockerEngine, build_images

from flts.kafka_users import SERVICES as KAFKA_SERVICES
from flts.storage_users import SERVICES as STORAGE_SERVICES

# Not started by the test (no stand-in for it); the compose file starts it for users. Prometheus runs (Debian's).
OBSERVABILITY = ("grafana",)
HOST_PORTS = ("GATEWAY", "INFERENCE", "MLFLOW", "MINIO", "MINIO_CONSOLE", "PROMETHEUS", "GRAFANA", "LOCUST")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    engine = DockerEngine().start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def compose_project(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    values = {
        "S3_ACCESS_KEY": f"flts-{secrets.token_hex(4)}",
        "S3_SECRET_KEY": secrets.token_hex(20),
        **{f"{service.upper()}_S3_SECRET_KEY": secrets.token_hex(20) for service in STORAGE_SERVICES},
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "FLTS_ADMIN_API_KEY": secrets.token_urlsafe(32),
        "KAFKA_ADMIN_PASSWORD": secrets.token_hex(20),
        **{f"{service.upper()}_KAFKA_PASSWORD": secrets.token_hex(20) for service in KAFKA_SERVICES},
        "TORCH_INDEX_URL": "",
        **{f"FLTS_{name}_PORT": str(_free_port()) for name in HOST_PORTS},
    }
    project = Compose.with_env(PROJECT, tmp_path_factory.mktemp("compose"), values, overrides=(COMPOSE_SASL_FILE,))
    project("down", "--volumes", "--remove-orphans", check=False)  # whatever a killed run left behind
    started = time.monotonic()
    build_seconds = build_images(project)
    print(f"\ncompose: images built in {build_seconds:.0f} s", file=sys.stderr)
    try:
        try:
            project("up", "--detach", "--pull=never", *(f"--scale={name}=0" for name in OBSERVABILITY), timeout=900)
        except RuntimeError:
            print(project("logs", "--no-color", "--tail", "60", check=False).stdout, file=sys.stderr)
            raise
        print(f"compose: up in {time.monotonic() - started - build_seconds:.0f} s", file=sys.stderr)
        yield project
    finally:
        project("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)
        left = project.leftovers()
        assert not left, f"docker compose down left these behind: {left}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """A failed compose test carries `docker compose logs` (the last lines of every service)."""
    report = yield
    project = getattr(item, "funcargs", {}).get("compose_project")
    if report.failed and isinstance(project, Compose):
        logs = project("logs", "--no-color", "--tail", "80", check=False, timeout=120)
        report.sections.append(("docker compose logs", logs.stdout + logs.stderr))
    return report


@pytest.fixture(scope="module")
def urls(compose_project: Compose) -> dict[str, str]:
    env = compose_project.env
    return {
        "gateway": f"http://127.0.0.1:{env['FLTS_GATEWAY_PORT']}",
        "inference": f"http://127.0.0.1:{env['FLTS_INFERENCE_PORT']}",
        "prometheus": f"http://127.0.0.1:{env['FLTS_PROMETHEUS_PORT']}",
    }
