"""A worker's own HTTP endpoint: /metrics for Prometheus, /healthz for the liveness probe; what the metrics count."""

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from flts.kafka import ConsumerLoop, ConsumerStalled
from flts.observability import start_metrics_server
from flts.settings import ConsumerSettings
from flts.web import BodySizeLimit, service_app


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_worker_serves_metrics_and_a_healthz_that_fails_once_its_consumer_is_unhealthy() -> None:
    state = {"healthy": True}
    port = _free_port()
    server = start_metrics_server(port, healthy=lambda: state["healthy"])
    assert server is not None
    try:
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"flts_messages_handled_total" in body

        state["healthy"] = False
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert (status, json.loads(body)) == (503, {"status": "stalled"})
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200, "metrics are still scraped"
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_port_zero_serves_nothing() -> None:
    assert start_metrics_server(0) is None


def _sample(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def test_every_api_response_is_counted_by_status_code_but_the_probes_and_metrics_are_not() -> None:
    """flts_http_responses_total (alert FltsApiErrors) counts around the whole app: a route's answer, an
    HTTPException, a middleware's own answer and an unhandled error's 500."""
    router = APIRouter()

    @router.get("/fine")
    def fine() -> dict[str, str]:
        return {"status": "fine"}

    @router.get("/missing")
    def missing() -> None:
        raise HTTPException(404, "no such thing")

    @router.get("/broken")
    def broken() -> None:
        raise RuntimeError("a bug")

    app = service_app("FLTS unit", "Counting.", _no_lifespan, router)
    app.add_middleware(BodySizeLimit, max_bytes=10)  # added after service_app: its 413 is still counted
    codes = ("200", "404", "413", "500")
    before = {code: _sample("flts_http_responses_total", {"code": code}) or 0.0 for code in codes}
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/fine").status_code == 200
        assert client.get("/missing").status_code == 404
        assert client.get("/broken").status_code == 500
        assert client.post("/fine", content=b"x" * 100).status_code == 413
        for probe in ("/healthz", "/metrics", "/metrics/"):
            client.get(probe)
    after = {code: _sample("flts_http_responses_total", {"code": code}) or 0.0 for code in codes}
    assert {code: after[code] - before[code] for code in codes} == dict.fromkeys(codes, 1)


@asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def test_the_stall_watchdog_exports_lag_and_idle_seconds_before_it_gives_up() -> None:
    """flts_consumer_lag_messages and flts_consumer_idle_seconds (alerts FltsConsumerLag, FltsConsumerStalled) are
    set at each check; idle is 0 while nothing waits, and the watchdog still raises at consumer_stall_seconds."""
    loop = ConsumerLoop.__new__(ConsumerLoop)  # its checks only: no broker
    loop.settings = ConsumerSettings(service_name="unit-watch", consumer_stall_seconds=60)
    loop.topic, loop.group_id, loop.stalled = "unit-topic", "unit-group", None
    labels = {"service": "unit-watch", "topic": "unit-topic"}

    def check(lag: dict[str, int], idle_for: float) -> None:
        loop._lag = lambda: lag  # type: ignore[method-assign]
        loop._last_progress, loop._next_check = time.monotonic() - idle_for, 0.0
        loop._watch()

    check({}, idle_for=30)
    assert (_sample("flts_consumer_lag_messages", labels), _sample("flts_consumer_idle_seconds", labels)) == (0, 0)
    check({"unit-topic[0]": 2, "unit-topic[1]": 1}, idle_for=30)
    assert _sample("flts_consumer_lag_messages", labels) == 3
    assert 30 <= _sample("flts_consumer_idle_seconds", labels) < 40
    with pytest.raises(ConsumerStalled):
        check({"unit-topic[0]": 1}, idle_for=61)
    assert _sample("flts_consumer_lag_messages", labels) == 1
    assert _sample("flts_consumer_idle_seconds", labels) >= 61
