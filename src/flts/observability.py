"""Structured JSON logs (one event per line, with correlation fields) and Prometheus metrics."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("flts_log_context", default=None)
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        event.update(_CONTEXT.get() or {})
        event.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, librdkafka's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "urllib3", "cmdstanpy", "prophet", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add correlation fields (config_hash, run_id, request_id, ...) to every log line in the block."""
    merged = {**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds: not worth a log line each."""


def start_metrics_server(port: int, healthy: Callable[[], bool] | None = None) -> WSGIServer | None:
    """Serve /metrics and /healthz for a service without an HTTP server of its own (port 0: none).

    /healthz is the liveness probe: 200 while ``healthy()`` holds, 503 once it does not.
    """
    if not port:
        return None
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)
        ok = healthy is None or healthy()
        body = json.dumps({"status": "ok" if ok else "stalled"}).encode()
        status = "200 OK" if ok else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    server = make_server("0.0.0.0", port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server


MESSAGES_HANDLED = Counter(
    "flts_messages_handled_total",
    "Kafka messages handled, by topic and outcome (ok, dead_letter, retried).",
    ["service", "topic", "outcome"],
)
BACKBONE_OUTAGES = Counter(
    "flts_backbone_outage_failures_total",
    "Handler attempts that failed because S3, MLflow or Kafka was unreachable (retried, not dead-lettered).",
    ["service"],
)
HANDLER_SECONDS = Histogram(
    "flts_handler_seconds",
    "Time spent handling one Kafka message.",
    ["service", "topic"],
    buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900),
)
# Set by the consumer loop's stall watchdog at each check (every consumer_stall_seconds / 4, at most 30 s; not while
# a handler runs: a long training is not a stall).
CONSUMER_LAG = Gauge(
    "flts_consumer_lag_messages",
    "Messages waiting on this consumer's partitions of the topic, at the watchdog's last check.",
    ["service", "topic"],
)
CONSUMER_IDLE = Gauge(
    "flts_consumer_idle_seconds",
    "Seconds messages have waited on this consumer's partitions with none consumed (0 while none waits); "
    "the watchdog restarts the consumer at consumer_stall_seconds.",
    ["service", "topic"],
)
