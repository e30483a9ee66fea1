"""A real Prometheus for the tests: Debian's `prometheus` and `promtool`, the dashboard's queries, the alert rules.

tests/deploy checks and unit-tests the alerting rules with promtool; tests/e2e runs the Debian binary on loopback
against the local stack (`LocalPrometheus`); tests/compose asks the compose file's Prometheus (its stand-in image
is the same Debian package). Both of those evaluate every query of every dashboard panel with one function,
`wait_for_dashboard_data`, while `Traffic` keeps the pipeline busy enough for every rate to have something to show.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml
from debian_packages import debian_binaries

from flts.client import FltsClient, window_request

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / ".helm" / "files" / "grafana" / "flts.json"
ALERT_RULES = REPO / ".helm" / "files" / "prometheus" / "alerts.yaml"

# Dashboard queries that rightly show nothing while all is well; they must still evaluate without an error.
EMPTY_WHEN_HEALTHY = {
    'sum(increase(flts_predictions_total{outcome="overloaded"}[5m]))': (
        "no /predict was refused with a 429: the queue never filled (the series appears with the first refusal)"
    ),
    'sum(increase(flts_predictions_total{outcome="timed_out"}[5m]))': (
        "no /predict timed out (504): the series appears with the first timeout"
    ),
}


def prometheus_binaries() -> tuple[str, str]:
    """Debian's `prometheus` and `promtool`, installed with apt-get when missing (needs root, as CI has)."""
    prometheus, promtool = debian_binaries("prometheus", "prometheus", "promtool")
    return prometheus, promtool


# ------------------------------------------------------------------------------------------- the HTTP API


def api(url: str, path: str, **params: str) -> Any:
    """One call of Prometheus's HTTP API; its `data`, or an AssertionError with Prometheus's own error."""
    body = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=30).json()
    assert body.get("status") == "success", f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
    return body["data"]


def dashboard_queries(dashboard: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, query) of every target of every panel."""
    panels = json.loads(dashboard.read_text())["panels"]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel["targets"]]


def _has_a_number(result: list[dict[str, Any]]) -> bool:
    """A series with a value that is a number (a quantile of no observations is NaN: nothing to show)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


def dashboard_without_data(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every dashboard query (but those of EMPTY_WHEN_HEALTHY) Prometheus answers with no number now, as
    "panel: query" -> what it answered. A query Prometheus cannot evaluate raises."""
    missing = {}
    for title, expr in dashboard_queries():
        answer = api(url, "query", query=expr)
        assert answer["resultType"] == "vector", f"{title}: {expr} is no instant vector: {answer}"
        result = answer["result"]
        if expr not in EMPTY_WHEN_HEALTHY and not _has_a_number(result):
            missing[f"{title}: {expr}"] = result
    return missing


def wait_for_dashboard_data(url: str, timeout: float, keep_busy: Callable[[], None] | None = None) -> None:
    """Until every dashboard query has data (`dashboard_without_data` is empty), calling `keep_busy` between
    tries; an AssertionError naming the queries still without data after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if keep_busy is not None:
            keep_busy()
        missing = dashboard_without_data(url)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, f"dashboard queries without data after {timeout:.0f} s: {missing}"


def wait_for_targets(url: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    """The active scrape targets once `expected` of them are up (each scraped at least once)."""
    deadline = time.monotonic() + timeout
    while True:
        targets = api(url, "targets", state="active")["activeTargets"]
        if sum(t["health"] == "up" for t in targets) >= expected or time.monotonic() > deadline:
            return targets
        time.sleep(1)


def evaluated_rules(url: str, timeout: float) -> list[dict[str, Any]]:
    """Every alerting rule loaded, once each has been evaluated (health ok or err, no longer unknown)."""
    deadline = time.monotonic() + timeout
    while True:
        groups = api(url, "rules", type="alert")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if (rules and all(rule["health"] != "unknown" for rule in rules)) or time.monotonic() > deadline:
            return rules
        time.sleep(1)


def alert_rules(path: Path = ALERT_RULES) -> dict[str, dict[str, Any]]:
    """The alerting rules of the file, by alert name."""
    return {rule["alert"]: rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}


# ------------------------------------------------------------------------------------------- the traffic


class Traffic:
    """What a person uses the pipeline for, a little at a time, so every rate on the dashboard has a number: the
    same upload again (every worker handles its message again; nothing retrains) and the test file's last rows
    sent for batch scoring, once; then forecasts on /predict and the next measurement of the series on
    /measurements (forecast by inference's live stream) each time."""

    def __init__(self, client: FltsClient, train_csv: Path, test_csv: Path, step: str = "2min") -> None:
        self.client, self.train_csv, self.test_csv = client, train_csv, test_csv
        self.test = pd.read_csv(test_csv)
        self.step = pd.Timedelta(step)
        self.rounds = itertools.count()

    def __call__(self) -> None:
        if next(self.rounds) == 0:
            self.client.upload(self.train_csv, self.test_csv)
            self.score(rows=200)
        for _ in range(5):
            self.client.predict(window_request(self.test, 10))
        self.measure_next()

    def score(self, rows: int) -> None:
        """The test file's last `rows` rows as a batch-scoring claim (POST /score)."""
        body = self.test.tail(rows).to_csv(index=False).encode()
        response = httpx.post(
            f"{self.client.gateway_url}/score",
            files={"rows": ("rows.csv", body, "text/csv")},
            headers=self.client.headers,
            timeout=60,
        )
        assert response.status_code == 202, response.text

    def measure_next(self) -> None:
        """The row after the latest one inference knows of (its /predict without rows says which)."""
        last = pd.Timestamp(self.client.predict({})["last_row_ts"])
        cells = {name: None if pd.isna(value) else value for name, value in self.test.iloc[-1].items()}
        row = {**cells, "time": (last + self.step).isoformat()}
        response = httpx.post(
            f"{self.client.gateway_url}/measurements", json={"rows": [row]}, headers=self.client.headers, timeout=30
        )
        assert response.status_code == 202, response.text


# ------------------------------------------------------------------------------------------- a local server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalPrometheus:
    """Debian's prometheus as a process on loopback, scraping `scrape_configs` every second and evaluating the
    FLTS alerting rules; `stop` ends it by its PID."""

    def __init__(self, directory: Path, scrape_configs: list[dict[str, Any]], rules: Path = ALERT_RULES) -> None:
        self.directory, self.port = directory, free_port()
        self.config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": scrape_configs,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "prometheus.log"

    def start(self, timeout: float = 60) -> LocalPrometheus:
        prometheus, _ = prometheus_binaries()
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
