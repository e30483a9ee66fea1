"""How a consumer service starts: JSON logs, /metrics and /healthz, then one ConsumerLoop until SIGTERM.

SIGTERM while a handler runs (a pod rescheduled mid-training) stops the process within seconds: the loop
leaves its message uncommitted for the group's next member, a handler that can (`Abandonable`: the
trainers) closes its work, and the process exits without waiting for the handler's thread, which nothing
can stop from outside (a torch epoch, a Prophet fit waiting on CmdStan).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn, Protocol, runtime_checkable

from flts.kafka import ConsumerLoop, ConsumerStalled
from flts.messages import MessageT
from flts.observability import configure_logging, start_metrics_server
from flts.settings import ConsumerSettings

log = logging.getLogger(__name__)

# How long an interrupted handler's clean-up (closing MLflow runs) may take before the process exits anyway.
ABANDON_SECONDS = 5.0


@runtime_checkable
class Abandonable(Protocol):
    """A handler whose work in progress can be closed when the process stops in the middle of it."""

    def abandon(self, reason: str) -> None: ...


def run_consumer(
    settings: ConsumerSettings,
    topic: str,
    message_type: type[MessageT],
    make_handler: Callable[[], Callable[[MessageT], None]],
) -> None:
    """Build the handler only after logging is set up, so connection errors are logged as JSON.

    A stalled consumer (the loop's watchdog) fails /healthz and restarts the process in place.
    """
    configure_logging(settings.service_name, settings.log_level)
    loop: ConsumerLoop[MessageT] | None = None
    start_metrics_server(settings.metrics_port, healthy=lambda: loop is None or loop.healthy)
    handler = make_handler()
    loop = ConsumerLoop(settings, topic, message_type, handler)
    loop.install_signal_handlers()
    try:
        loop.run()
    except ConsumerStalled:
        restart_process()
    if loop.interrupted:
        exit_mid_handler(handler)


def exit_mid_handler(handler: Callable[..., None]) -> NoReturn:
    """Close the interrupted handler's work (bounded: MLflow may be down) and exit without joining its thread."""
    if isinstance(handler, Abandonable):
        closing = threading.Thread(target=handler.abandon, args=("stopped by SIGTERM before it finished",))
        closing.start()
        closing.join(ABANDON_SECONDS)
    log.warning("exiting with the handler unfinished; its message goes to the group's next member")
    logging.shutdown()
    os._exit(0)


def restart_process() -> NoReturn:
    """Replace this process by a fresh run of its own command line.

    The pid stays, so the local stack (which supervises nothing), compose and Kubernetes all keep
    tracking the same process, and no supervisor is needed for it to come back.
    """
    log.error("restarting the process", extra={"argv": sys.orig_argv})
    logging.shutdown()
    os.execv(sys.executable, sys.orig_argv)
