"""How a consumer service starts: JSON logs, /metrics, then one ConsumerLoop until SIGTERM."""

from __future__ import annotations

from collections.abc import Callable

from flts.config import ConsumerSettings
from flts.kafka import ConsumerLoop
from flts.messages import MessageT
from flts.observability import configure_logging, start_metrics_server


def run_consumer(
    settings: ConsumerSettings,
    topic: str,
    message_type: type[MessageT],
    make_handler: Callable[[], Callable[[MessageT], None]],
) -> None:
    """Build the handler only after logging is set up, so connection errors are logged as JSON."""
    configure_logging(settings.service_name, settings.log_level)
    start_metrics_server(settings.metrics_port)
    loop = ConsumerLoop(settings, topic, message_type, make_handler())
    loop.install_signal_handlers()
    loop.run()
