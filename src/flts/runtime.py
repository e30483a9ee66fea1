"""How a consumer service starts: JSON logs, /metrics and /healthz, then one ConsumerLoop until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from flts.config import ConsumerSettings
from flts.kafka import ConsumerLoop, ConsumerStalled
from flts.messages import MessageT
from flts.observability import configure_logging, start_metrics_server

log = logging.getLogger(__name__)


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
    loop = ConsumerLoop(settings, topic, message_type, make_handler())
    loop.install_signal_handlers()
    try:
        loop.run()
    except ConsumerStalled:
        restart_process()


def restart_process() -> NoReturn:
    """Replace this process by a fresh run of its own command line.

    The pid stays, so the local stack (which supervises nothing), compose and Kubernetes all keep
    tracking the same process, and no supervisor is needed for it to come back.
    """
    log.error("restarting the process", extra={"argv": sys.orig_argv})
    logging.shutdown()
    os.execv(sys.executable, sys.orig_argv)
