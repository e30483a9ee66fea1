"""The dead-letter topic for operators: list what failed and why, and re-drive it after fixing the cause.

Replay re-publishes each dead letter's original bytes, key and headers to the topic it came from, with
a `flts-replayed-from` header, then commits the dead letter's offset in the replay consumer group: a
second replay finds nothing new (idempotent), and the handlers downstream are idempotent themselves.

Replay runs with the admin's rights, and any consumer may write a dead letter naming any topic: it re-publishes
only to the pipeline's own topics, a letter naming the group that consumes the topic (`replay_refusal`, from the
Kafka ACL table, flts.kafka_users). It stops at the first other letter (`ReplayRefused`: nothing from it on is
replayed or committed) unless told to pass over such letters (`skip_refused`: they stay on the topic, unreplayed).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from flts.consumers import new_consumer
from flts.kafka import MessageProducer
from flts.kafka_users import SERVICE_GRANTS
from flts.messages import DeadLetter
from flts.settings import CommonSettings

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
    """A consumer of the dead-letter topic from its start, committing nothing by itself; the caller closes it."""
    consumer = new_consumer(settings, group, {"auto.offset.reset": "earliest", "enable.auto.commit": False})
    if subscribe:
        consumer.subscribe([settings.topic_dead_letter])
    return consumer


def list_letters(settings: CommonSettings, idle_seconds: float = 5.0) -> list[Letter]:
    """Every dead letter, oldest first per partition (a throw-away group: nothing is committed)."""
    with closing(_consumer(settings, f"flts-dead-letter-list-{time.time_ns()}")) as consumer:
        return [letter for letter, _ in _read(consumer, settings.topic_dead_letter, idle_seconds) if letter]


def latest_letters(settings: CommonSettings, count: int = 5, timeout: float = 10.0) -> tuple[int, list[Letter]]:
    """How many dead letters the topic holds, and up to ``count`` of the latest per partition (newest first):
    read from the end of each partition without joining a group, so it costs the same for any backlog."""
    topic = settings.topic_dead_letter
    with closing(_consumer(settings, f"flts-dead-letter-peek-{time.time_ns()}", subscribe=False)) as consumer:
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


def replay_targets(settings: CommonSettings) -> dict[str, tuple[str, ...]]:
    """Each topic a replay may publish to, with the consumer groups (prefixes) that consume it: the pipeline's own
    (topic, group) pairs, from the Kafka ACL table. Topics read without a group (the gateway's) are none of them."""
    targets: dict[str, tuple[str, ...]] = {}
    for grants in SERVICE_GRANTS.values():
        for field in grants.consumes if grants.groups else ():
            topic = getattr(settings, field)
            targets[topic] = (*targets.get(topic, ()), *grants.groups)
    return targets


def replay_refusal(settings: CommonSettings, letter: DeadLetter) -> str | None:
    """Why a dead letter may not be replayed (None: it may): its topic is not one the pipeline consumes, or the
    group it names does not consume that topic."""
    targets = replay_targets(settings)
    topic, group = letter.source_topic, letter.consumer_group
    if topic not in targets:
        return f"topic {topic!r} is not one of the pipeline's consumed topics {sorted(targets)}"
    if not group.startswith(targets[topic]):
        return f"group {group!r} does not consume {topic!r} (its consumer groups: {', '.join(targets[topic])}*)"
    return None


class ReplayRefused(Exception):
    """A dead letter replay will not publish; the letters before it were replayed, it and those after it not."""

    def __init__(self, letter: Letter, reason: str, sent: list[Letter]) -> None:
        super().__init__(
            f"dead letter {letter.position} is not replayed: {reason}. Nothing from it on was replayed; "
            "`flts dead-letters replay --skip-refused` passes over such letters (they stay on the topic)"
        )
        self.letter, self.reason, self.sent = letter, reason, sent


@dataclass(frozen=True)
class Replayed:
    sent: list[Letter]
    skipped: list[tuple[Letter, str]]  # refused letters passed over (skip_refused), with the reason


def replay(settings: CommonSettings, idle_seconds: float = 5.0, skip_refused: bool = False) -> Replayed:
    """Re-publish every dead letter not replayed before to its topic, if the pipeline consumes it with the group
    the letter names (`replay_refusal`); another letter raises ReplayRefused, or with ``skip_refused`` is passed
    over (its offset committed, nothing published)."""
    sent: list[Letter] = []
    skipped: list[tuple[Letter, str]] = []
    with closing(MessageProducer(settings)) as producer, closing(_consumer(settings, REPLAY_GROUP)) as consumer:
        for letter, msg in _read(consumer, settings.topic_dead_letter, idle_seconds):
            if letter is not None:
                original = letter.letter
                refusal = replay_refusal(settings, original)
                if refusal is not None and not skip_refused:
                    raise ReplayRefused(letter, refusal, sent)
                if refusal is not None:
                    skipped.append((letter, refusal))
                else:
                    headers = {**original.headers, REPLAYED_FROM: f"{settings.topic_dead_letter}/{letter.position}"}
                    producer.send(original.source_topic, original.key, base64.b64decode(original.value_b64), headers)
                    sent.append(letter)
            consumer.commit(message=msg, asynchronous=False)
    return Replayed(sent, skipped)
