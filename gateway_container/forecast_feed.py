"""A tenant's live forecasts, read from the `forecasts` topic for `GET /forecasts` (routes in `results.py`).

The topic holds every tenant's forecasts, so it is never handed out: the gateway reads it for the caller and
passes on only the forecasts of the identifier the caller's key may use. Forecasts are keyed by identifier
(`Message.key`) and produced without a partitioner set, so librdkafka's default (`consistent_random`: CRC32 of
the key, modulo the partitions) put all of an identifier's forecasts on one partition, and only that one is
read (`forecast_partition`; tests/integration/test_tenant_results.py checks it against the real producer). On
it, forecasts of other identifiers that hash to the same partition are skipped by key and, once parsed, by the
forecast's own identifier.

A reader assigns that partition and seeks: no consumer group, nothing committed, `read_committed` (a forecast
whose transaction was aborted is never passed on). Where it goes on from is a cursor, `<partition>:<offset>`,
the position after the last message read; without one it starts at the partition's end (what arrives from now).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import zlib
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from flts.consumers import new_consumer
from flts.messages import Forecast, MessageError
from flts.settings import GatewaySettings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# Messages of the partition one read takes at most (of any identifier; the caller's are filtered from them).
READ_MESSAGES = 500
CURSOR = re.compile(r"^(\d{1,6}):(\d{1,19})$")
METADATA_TIMEOUT_S = 5.0


class ForecastsUnavailable(RuntimeError):
    """The broker, or the forecasts topic, cannot be reached."""


def forecast_partition(identifier: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random) gives a message keyed ``identifier``."""
    return zlib.crc32(identifier.encode()) % partitions


@dataclass(frozen=True)
class Cursor:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A cursor as the gateway gave it (`<partition>:<offset>`); ValueError otherwise."""
        found = CURSOR.match(text)
        if not found:
            raise ValueError(f"cursor {text!r} is not <partition>:<offset> as the gateway gave it")
        return cls(int(found[1]), int(found[2]))


class ForecastFeed:
    """One identifier's forecasts from a cursor on (or from the end): one consumer on the identifier's partition.

    Not thread-safe: one caller at a time (the routes call it from one worker thread after another)."""

    def __init__(self, settings: GatewaySettings, identifier: str, after: Cursor | None = None) -> None:
        self.topic = settings.topic_forecasts
        self.identifier = identifier
        self._key = identifier.encode()
        self._consumer = new_consumer(
            settings,
            # librdkafka wants a group id; this one is never joined and nothing is committed under it.
            f"flts-gateway-forecasts-{uuid.uuid4().hex}",
            {
                "client.id": f"{settings.service_name}-forecasts",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "latest",
                "log_level": 3,
            },
        )
        try:
            self.partition, start = self._start(after)
            self._consumer.assign([TopicPartition(self.topic, self.partition, start)])
        except (KafkaException, ForecastsUnavailable):
            self._consumer.close()
            raise
        self.offset = start

    def _start(self, after: Cursor | None) -> tuple[int, int]:
        """The identifier's partition, and the offset to read from: the cursor's (within what the partition still
        holds) when it names that partition, else the partition's end."""
        topics = self._consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT_S).topics
        described = topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            raise ForecastsUnavailable(f"topic {self.topic!r}: {described.error if described else 'not found'}")
        partition = forecast_partition(self.identifier, len(described.partitions))
        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=METADATA_TIMEOUT_S
        )
        if after is None or after.partition != partition:
            return partition, high  # the partition count changed since the cursor was given: from now on
        return partition, min(max(after.offset, low), high)

    @property
    def cursor(self) -> Cursor:
        """Where the next read goes on from: after every message read so far (the caller's or not)."""
        return Cursor(self.partition, self.offset)

    def read(self, timeout: float = POLL_SECONDS) -> list[tuple[Cursor, Forecast]]:
        """The identifier's forecasts among the next messages (waiting up to ``timeout`` s for some), each with
        the cursor just after it."""
        found = []
        for msg in self._consumer.consume(READ_MESSAGES, timeout):
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:  # described, not readable: no Read ACL
                    raise ForecastsUnavailable(f"topic {self.topic!r}: {error}")
                continue  # transient (a broker away, a partition's end): librdkafka retries
            self.offset = msg.offset() + 1
            if msg.key() != self._key:
                continue
            try:
                forecast = Forecast.from_bytes(msg.value())
            except MessageError:
                log.warning("not a forecast on the forecasts topic", extra={"offset": msg.offset()})
                continue
            if forecast.identifier == self.identifier:
                found.append((Cursor(self.partition, self.offset), forecast))
        return found

    def close(self) -> None:
        self._consumer.close()


def collect(feed: ForecastFeed, wait: float) -> list[Forecast]:
    """A long poll: the identifier's forecasts after the feed's cursor, as soon as one read finds some (at most
    READ_MESSAGES), or none once ``wait`` s have passed; the feed's cursor says where the next poll goes on from."""
    deadline = time.monotonic() + wait
    while True:
        found = [forecast for _, forecast in feed.read(POLL_SECONDS)]
        if found or time.monotonic() >= deadline:
            return found
