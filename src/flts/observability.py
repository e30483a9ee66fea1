"""Structured JSON logs (one event per line, with correlation fields) and Prometheus metrics."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server

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


def start_metrics_server(port: int) -> None:
    """Expose /metrics for services without an HTTP server of their own (0 disables it)."""
    if port:
        start_http_server(port)


MESSAGES_HANDLED = Counter(
    "flts_messages_handled_total",
    "Kafka messages handled, by topic and outcome (ok, dead_letter, retried).",
    ["service", "topic", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "flts_handler_seconds",
    "Time spent handling one Kafka message.",
    ["service", "topic"],
    buckets=(0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900),
)
