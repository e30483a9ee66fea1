"""A worker's own HTTP endpoint: /metrics for Prometheus, /healthz for the liveness probe."""

import json
import socket
import urllib.error
import urllib.request

from flts.observability import start_metrics_server


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
