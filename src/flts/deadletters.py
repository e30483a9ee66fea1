"""The dead-letter topic for operators: list what failed and why, and re-drive it after fixing the cause.

Replay re-publishes each dead letter's original bytes, key and headers to the topic it came from, with
a `flts-replayed-from` header, then commits the dead letter's offset in the replay consumer group: a
second replay finds nothing new (idempotent), and the handlers downstream are idempotent themselves.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from flts.config import CommonSettings
from flts.kafka import MessageProducer
from flts.messages import DeadLetter

REPLAY_GROUP = "flts-dead-letter-replay"
REPLAYED_FROM = "flts-replayed-from"


@dataclass(frozen=True)
class Letter:
    partition: int
    offset: int
    letter: DeadLetter

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"


def _read(consumer: Consumer, topic: str, idle_seconds: float) -> Iterator[tuple[Letter | None, object]]:
    """Every message up to the end of each partition as it was when reading started."""
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in metadata.partitions}
    done = {p for p, end in ends.items() if end == 0}
    last_message = time.monotonic()
    while len(done) < len(ends) and time.monotonic() - last_message < idle_seconds:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        last_message = time.monotonic()
        if msg.offset() + 1 >= ends[msg.partition()]:
            done.add(msg.partition())
        try:
            letter = DeadLetter.model_validate_json(msg.value())
        except ValueError:
            yield None, msg  # not a dead letter of ours: skipped, but its offset moves on
            continue
        yield Letter(msg.partition(), msg.offset(), letter), msg


def _consumer(settings: CommonSettings, group: str, subscribe: bool = True) -> Consumer:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    if subscribe:
        consumer.subscribe([settings.topic_dead_letter])
    return consumer


def list_letters(settings: CommonSettings, idle_seconds: float = 5.0) -> list[Letter]:
    """Every dead letter, oldest first per partition (a throw-away group: nothing is committed)."""
    consumer = _consumer(settings, f"flts-dead-letter-list-{time.time_ns()}")
    try:
        return [letter for letter, _ in _read(consumer, settings.topic_dead_letter, idle_seconds) if letter]
    finally:
        consumer.close()


def latest_letters(settings: CommonSettings, count: int = 5, timeout: float = 10.0) -> tuple[int, list[Letter]]:
    """How many dead letters the topic holds, and up to ``count`` of the latest per partition (newest first):
    read from the end of each partition without joining a group, so it costs the same for any backlog."""
    topic = settings.topic_dead_letter
    consumer = _consumer(settings, f"flts-dead-letter-peek-{time.time_ns()}", subscribe=False)
    try:
        described = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if described is None or described.error is not None:
            return 0, []
        total, assignments, ends = 0, [], {}
        for partition in described.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            total += high - low
            if high > low:
                assignments.append(TopicPartition(topic, partition, max(low, high - count)))
                ends[partition] = high
        consumer.assign(assignments)
        letters: list[Letter] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
            try:
                letters.append(Letter(msg.partition(), msg.offset(), DeadLetter.model_validate_json(msg.value())))
            except ValueError:
                continue  # not a dead letter of ours
        return total, sorted(letters, key=lambda item: item.letter.failed_at, reverse=True)[:count]
    finally:
        consumer.close()


def replay(settings: CommonSettings, idle_seconds: float = 5.0) -> list[Letter]:
    """Re-publish every dead letter not replayed before; returns those sent."""
    producer = MessageProducer(settings)
    consumer = _consumer(settings, REPLAY_GROUP)
    sent: list[Letter] = []
    try:
        for letter, msg in _read(consumer, settings.topic_dead_letter, idle_seconds):
            if letter is not None:
                original = letter.letter
                headers = {**original.headers, REPLAYED_FROM: f"{settings.topic_dead_letter}/{letter.position}"}
                producer.send(original.source_topic, original.key, base64.b64decode(original.value_b64), headers)
                sent.append(letter)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
        producer.close()
    return sent
