"""Every Kafka consumer of the pipeline is made one way, and every embedded consumer worker is kept running one way.

- `new_consumer` builds a confluent-kafka Consumer from the settings' one client config (`kafka_client_config`:
  the brokers, SASL, TLS) and the consumer's own options, so no consumer can connect differently from the others;
- `open_consumer` ties a consumer's life to a scope (`with`): it is closed when the scope ends, however it ends,
  so it leaves its group at once instead of after ``session.timeout.ms``;
- `Supervisor` runs a worker (one consumer's loop) until its scope's ``stop`` is set: a worker that raises (a
  stalled or failed consumer) is started again after a backoff, and one that ends by itself is no longer alive
  (`is_alive`: what a replica's /healthz answers from), since only a restart of the process brings it back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

from confluent_kafka import Consumer

from flts.settings import CommonSettings

log = logging.getLogger(__name__)


def new_consumer(settings: CommonSettings, group_id: str, options: dict[str, Any] | None = None) -> Consumer:
    """A consumer in ``group_id`` with the settings' client config and ``options`` (offsets, isolation, ...);
    its holder closes it (`open_consumer` does, for a consumer that lives within one scope)."""
    return Consumer({**settings.kafka_client_config(), "group.id": group_id, **(options or {})})


@contextlib.contextmanager
def open_consumer(settings: CommonSettings, group_id: str, options: dict[str, Any] | None = None) -> Iterator[Consumer]:
    """A `new_consumer` closed when the ``with`` block ends (it leaves its group then, not a session timeout later)."""
    consumer = new_consumer(settings, group_id, options)
    try:
        yield consumer
    finally:
        consumer.close()


class Supervisor:
    """Keeps one worker running for as long as its scope lasts, i.e. until ``stop`` is set.

    ``work(stop)`` must return soon after ``stop`` is set. When it raises, it is started again after a wait that
    doubles from ``first_wait_s`` to ``last_wait_s`` (back to the first after a run longer than the last), so a
    worker failing at once does not spin; the wait ends early on ``stop``. When it returns without ``stop``, it
    ended by itself: the supervisor ends too, and `is_alive` turns False.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[threading.Event], None],
        stop: threading.Event,
        *,
        first_wait_s: float = 1.0,
        last_wait_s: float = 30.0,
    ) -> None:
        self.name = name
        self.work = work
        self.stop = stop
        self.first_wait_s = first_wait_s
        self.last_wait_s = last_wait_s
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Run the worker in this thread until ``stop`` (or until it ends by itself)."""
        wait = self.first_wait_s
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.work(self.stop)
                return
            except Exception:
                if time.monotonic() - started > self.last_wait_s:
                    wait = self.first_wait_s
                log.exception(f"the {self.name} failed; starting it again", extra={"retry_in_s": wait})
            self.stop.wait(wait)
            wait = min(wait * 2, self.last_wait_s)

    def start(self) -> Self:
        """Run the worker on a thread of its own (a daemon: it never holds the process up)."""
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """False once the worker's thread ended (by itself, or after ``stop``); True before it was started."""
        return self._thread is None or self._thread.is_alive()
