"""docker compose, for real: the repository's compose file on a real Docker engine, end to end.

`docker compose up` alone must end with a served champion (the file's own one-shot `upload-demo` sends
the bundled dataset); the `loadtest` profile's Locust must load the inference container without a failure;
the file's Prometheus must scrape every service, load the alerting rules and answer every query of the Grafana
dashboard with data; a trainer container killed mid-training (SIGKILL of its process, as the kernel's OOM killer
does) must not stop the pipeline. The whole project is taken down with its volumes afterwards, leaving nothing
behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from harness import Compose, run
from prometheus_support import (
    Traffic,
    alert_rules,
    evaluated_rules,
    wait_for_dashboard_data,
    wait_for_targets,
)

from flts.client import FltsClient, window_request
from flts.config import load_pipeline_config
from flts.data.generate import write_dataset
from flts.records import LineageStatus

# The first test builds the images (on a fresh machine: Debian stand-ins, PyTorch; 20-30 min).
pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

EXPECTED_RUNS = set(load_pipeline_config().evaluation.expected_model_types)  # the file compose mounts
WORKERS = ("preprocess", "train-gru", "train-lstm", "nonml", "eval")
HEALTHY = ("kafka", "minio", "postgres", "mlflow", "gateway", *WORKERS, "prometheus")


def _wait_for_exit(project: Compose, service: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container = project.state().get(service, {})
        if container.get("State") == "exited":
            return container
        time.sleep(3)
    raise AssertionError(f"{service} did not finish within {timeout:.0f} s: {project.state().get(service)}")


def _finished_runs(status: LineageStatus) -> set[str]:
    return {run.model_type for run in status.training if run.status == "FINISHED"}


@pytest.fixture(scope="module")
def client(urls: dict[str, str], compose_project: Compose) -> FltsClient:
    """The admin's key: compose turns authentication on."""
    return FltsClient(urls["gateway"], urls["inference"], api_key=compose_project.env["FLTS_ADMIN_API_KEY"])


@pytest.fixture(scope="module")
def demo_lineage(compose_project: Compose, client: FltsClient) -> LineageStatus:
    """What `docker compose up` alone produces: the one-shot uploader's lineage, served."""
    started = time.monotonic()
    uploader = _wait_for_exit(compose_project, "upload-demo", timeout=600)
    logs = compose_project("logs", "--no-color", "--no-log-prefix", "upload-demo").stdout
    assert uploader["ExitCode"] == 0, logs
    upload = json.loads(logs[logs.index("{") : logs.rindex("}") + 1])
    status = client.wait_for_champion(upload["config_hash"], upload["identifier"], timeout=900)
    print(f"\ncompose: upload-demo -> champion served in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return status


def test_compose_up_alone_ends_with_a_champion_answering_predict(
    compose_project: Compose, client: FltsClient, demo_lineage: LineageStatus, tmp_path: Path
) -> None:
    assert _finished_runs(demo_lineage) == EXPECTED_RUNS
    state = compose_project.state()
    unhealthy = {name: state[name].get("Health") for name in HEALTHY if state[name].get("Health") != "healthy"}
    assert not unhealthy, unhealthy
    assert state["init"]["ExitCode"] == 0

    _, test_csv = write_dataset(tmp_path)  # the same generated dataset the uploader sent
    forecast = client.predict(window_request(pd.read_csv(test_csv), rows=10))
    champion = demo_lineage.champion
    assert forecast["model_version"] == champion.model_version
    assert forecast["model_type"] == champion.model_type
    assert forecast["predictions"] and all(len(row) > 1 for row in forecast["predictions"])


# Run inside the gateway's container, with its own environment: its Kafka login and the services' code.
_PUBLISH_AS_GATEWAY = """
import sys
from confluent_kafka import KafkaException
from flts.settings import GatewaySettings
from flts.kafka import MessageProducer
settings = GatewaySettings()
try:
    MessageProducer(settings).send(getattr(settings, sys.argv[1]), "acl-probe", b"{}", None, timeout=30)
except KafkaException as exc:
    print(exc.args[0].name())
else:
    print("ACCEPTED")
"""


@pytest.mark.parametrize(
    ("topic", "outcome"),
    [("topic_model_selected", "TOPIC_AUTHORIZATION_FAILED"), ("topic_training_data", "TOPIC_AUTHORIZATION_FAILED")],
)
def test_the_gateways_kafka_user_cannot_announce_a_champion_or_feed_the_trainers(
    compose_project: Compose, demo_lineage: dict, topic: str, outcome: str
) -> None:
    """Kafka's ACLs hold in compose: the internet-facing gateway's login may publish only its own topics."""
    probe = compose_project("exec", "-T", "gateway", "python", "-c", _PUBLISH_AS_GATEWAY, topic)
    assert probe.stdout.strip().splitlines()[-1] == outcome, probe.stdout + probe.stderr


def test_loadtest_profile_locust_loads_inference_without_a_failure(compose_project: Compose, demo_lineage) -> None:
    """The profile's own Locust image and locustfile, headless, bounded to 20 s, inside the compose network."""
    result = compose_project(
        "--profile", "loadtest", "run", "--rm", "--no-deps", "locust-master",
        "-f", "/mnt/locust/locustfile.py", "--host", "http://inference:8001",
        "--headless", "--users", "8", "--spawn-rate", "8", "--run-time", "20s", "--stop-timeout", "5",
        "--only-summary", "--exit-code-on-error", "1",
        check=False, timeout=180,
    )  # fmt: skip
    output = result.stdout + result.stderr
    aggregated = re.search(r"Aggregated\s+(\d+)\s+(\d+)\(", output)
    assert aggregated, output[-3000:]
    requests, failures = map(int, aggregated.groups())
    print(f"\ncompose: locust 8 users 20 s -> {requests} requests, {failures} failures", file=sys.stderr)
    assert result.returncode == 0 and failures == 0 and requests > 0, output[-3000:]


def test_prometheus_scrapes_every_service_and_every_dashboard_query_has_data(
    urls: dict[str, str], client: FltsClient, demo_lineage: dict, tmp_path: Path
) -> None:
    """The file's Prometheus (deploy/prometheus/prometheus.yml, Debian's server in the stand-in image) finds every
    service by DNS, evaluates the alerting rules without an error and, once the demo lineage is served and used,
    answers each query of the Grafana dashboard with data (tests/prometheus_support.py, as the e2e test does)."""
    prometheus = urls["prometheus"]
    expected = {("gateway", "gateway"), ("inference", "inference"), *(("workers", name) for name in WORKERS)}
    targets = wait_for_targets(prometheus, len(expected) + 1, timeout=120)  # and Prometheus itself
    scraped = {(t["labels"]["job"], t["labels"].get("service", t["labels"]["job"])) for t in targets}
    assert scraped == expected | {("prometheus", "prometheus")}
    assert {t["health"] for t in targets} == {"up"}, [(t["scrapeUrl"], t["lastError"]) for t in targets]

    rules = evaluated_rules(prometheus, timeout=120)
    assert {rule["name"] for rule in rules} == set(alert_rules())
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    train_csv, test_csv = write_dataset(tmp_path)  # the uploader's dataset: sent again, nothing retrains
    wait_for_dashboard_data(prometheus, timeout=240, keep_busy=Traffic(client, train_csv, test_csv))


def _training_started(client: FltsClient, config_hash: str, identifier: str, model_type: str) -> bool:
    status = client.lineage(config_hash, identifier)
    return status is not None and any(r.model_type == model_type and r.status == "RUNNING" for r in status.training)


def test_a_trainer_killed_mid_training_is_restarted_and_the_lineage_completes(
    compose_project: Compose, client: FltsClient, demo_lineage, tmp_path: Path
) -> None:
    train_csv, test_csv = write_dataset(tmp_path, train_rows=6_000, test_rows=1_200, seed=23)
    upload = client.upload(train_csv, test_csv, identifier="compose-killed-trainer")
    config_hash, identifier = upload["config_hash"], upload["identifier"]

    deadline = time.monotonic() + 300
    while not _training_started(client, config_hash, identifier, "GRU"):
        assert time.monotonic() < deadline, client.lineage(config_hash, identifier)
        time.sleep(1)
    time.sleep(3)  # into the epochs, not the set-up
    container = compose_project.state()["train-gru"]
    pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", container["ID"]], capture_output=True).stdout)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    status = client.wait_for_champion(config_hash, identifier, timeout=900)
    print(
        f"\ncompose: train-gru SIGKILLed mid-training -> champion in {time.monotonic() - killed:.0f} s", file=sys.stderr
    )
    assert _finished_runs(status) == EXPECTED_RUNS
    restarts = run(["docker", "inspect", "-f", "{{.RestartCount}}", container["ID"]], capture_output=True).stdout
    assert int(restarts) >= 1, "the killed trainer was not restarted by its restart policy"
    forecast = client.predict(window_request(pd.read_csv(test_csv), rows=10, identifier=identifier))
    assert forecast["identifier"] == identifier
    assert forecast["model_version"] == status.champion.model_version
