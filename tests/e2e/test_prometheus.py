"""A real Prometheus on the e2e stack: Debian's `prometheus` scrapes every service, answers every query of the
Grafana dashboard with data once the lineage is served, and evaluates FLTS's alerting rules without an error.

It runs as a process on loopback (installed with apt-get on first use, as root), with the job names compose and
the chart use, one scrape a second, and is stopped by its PID at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from prometheus_support import (
    LocalPrometheus,
    Traffic,
    alert_rules,
    api,
    evaluated_rules,
    wait_for_dashboard_data,
    wait_for_targets,
)

from flts.stack.services import service_parts

pytestmark = pytest.mark.e2e


def scrape_configs(services) -> list[dict]:
    """Every service's metrics endpoint: the APIs' /metrics on their HTTP ports, the workers' on their metrics
    ports, each worker labelled with its service as compose's DNS relabelling does."""
    parts = service_parts(services)
    apis = {name: part.http_port for name, part in parts.items() if part.http_port}
    workers = {name: part.settings.metrics_port for name, part in parts.items() if not part.http_port}
    host = services.host
    return [
        *({"job_name": name, "static_configs": [{"targets": [f"{host}:{port}"]}]} for name, port in apis.items()),
        {
            "job_name": "workers",
            "static_configs": [{"targets": [f"{host}:{p}"], "labels": {"service": n}} for n, p in workers.items()],
        },
    ]


@pytest.fixture(scope="module")
def prometheus(services, first_run, tmp_path_factory) -> Iterator[str]:
    """Its URL, once the lineage is served and every target was scraped; stopped by its PID afterwards."""
    configs = scrape_configs(services)
    server = LocalPrometheus(tmp_path_factory.mktemp("prometheus"), configs).start()
    try:
        wait_for_targets(server.url, sum(len(c["targets"]) for j in configs for c in j["static_configs"]), 60)
        yield server.url
    finally:
        server.stop()


def test_prometheus_scrapes_every_service_and_every_dashboard_query_has_data(
    prometheus, services, client, dataset
) -> None:
    expected = {(name if name in ("gateway", "inference") else "workers", name) for name in service_parts(services)}
    targets = api(prometheus, "targets", state="active")["activeTargets"]
    scraped = {(t["labels"]["job"], t["labels"].get("service", t["labels"]["job"])) for t in targets}
    assert scraped == expected
    assert {t["health"] for t in targets} == {"up"}, [(t["scrapeUrl"], t["lastError"]) for t in targets]

    wait_for_dashboard_data(prometheus, timeout=120, keep_busy=Traffic(client, *dataset))


def test_the_alert_rules_evaluate_without_error_and_a_dead_letter_fires_its_alert(prometheus, settings) -> None:
    rules = evaluated_rules(prometheus, timeout=60)
    assert {rule["name"] for rule in rules} == set(alert_rules())
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    # A message preprocess cannot read goes to the dead-letter topic: FltsDeadLetters fires at the next evaluation.
    producer = Producer(settings.kafka_client_config())
    producer.produce(settings.topic_dataset_uploaded, b"{}")
    assert producer.flush(30) == 0
    fired = _firing(prometheus, "FltsDeadLetters", timeout=60)
    assert [(a["labels"]["service"], a["labels"]["topic"]) for a in fired] == [
        ("preprocess", settings.topic_dataset_uploaded)
    ]
    alerts = api(prometheus, "alerts")["alerts"]
    others = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"} - {"FltsDeadLetters"}
    assert not others, f"alerts firing on a healthy stack: {others}"


def _firing(url: str, name: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        firing = [
            alert
            for alert in api(url, "alerts")["alerts"]
            if alert["labels"]["alertname"] == name and alert["state"] == "firing"
        ]
        if firing or time.monotonic() > deadline:
            assert firing, f"{name} did not fire within {timeout:.0f} s: {api(url, 'alerts')['alerts']}"
            return firing
        time.sleep(1)
