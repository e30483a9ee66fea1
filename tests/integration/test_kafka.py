"""The Kafka layer against a real Apache Kafka broker: delivery, commits, restarts, poison, long handlers."""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from flts.consumers import Supervisor, open_consumer
from flts.kafka import ConsumerLoop, ConsumerStalled, MessageProducer, PermanentError, committed_offsets
from flts.messages import DeadLetter, ModelTraining
from flts.settings import ConsumerSettings

pytestmark = pytest.mark.integration

HASH = "c" * 64


def _publish(settings: ConsumerSettings, topic: str, count: int) -> list[str]:
    producer = MessageProducer(settings)
    events = [ModelTraining(config_hash=HASH, model_type="GRU", status="RUNNING") for _ in range(count)]
    for event in events:
        producer.publish(topic, event)
    producer.close()
    return [e.event_id for e in events]


def _consume(settings: ConsumerSettings, topic: str, count: int, handler=None) -> list[str]:
    seen: list[str] = []

    def record(message: ModelTraining) -> None:
        if handler:
            handler(message)
        seen.append(message.event_id)

    loop = ConsumerLoop(settings, topic, ModelTraining, record)
    timer = threading.Timer(60, loop.stop)
    timer.start()
    try:
        loop.run(max_messages=count)
    finally:
        timer.cancel()
    return seen


def test_produce_consume_commit(settings, topic):
    sent = _publish(settings, topic, 5)
    assert _consume(settings, topic, 5) == sent
    assert committed_offsets(settings, settings.consumer_group, topic, [0]) == {0: 5}


def test_a_consumer_stopped_after_half_resumes_without_loss_or_replay(settings, topic):
    sent = _publish(settings, topic, 10)
    first = _consume(settings, topic, 5)
    second = _consume(settings, topic, 5)
    assert first + second == sent


def test_a_consumer_killed_mid_batch_loses_nothing(settings, topic, tmp_path: Path, stack_env):
    sent = _publish(settings, topic, 12)
    record = tmp_path / "handled.txt"
    record.touch()
    worker = [
        sys.executable,
        str(Path(__file__).with_name("kafka_worker.py")),
        topic,
        settings.consumer_group,
        str(record),
    ]
    env = {**os.environ, **stack_env}
    process = subprocess.Popen(worker, env=env)
    deadline = time.monotonic() + 60
    while len(record.read_text().split()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    handled_before = len(record.read_text().split())
    assert 4 <= handled_before < 12

    restarted = subprocess.Popen(worker, env=env)
    try:
        deadline = time.monotonic() + 90
        while set(record.read_text().split()) != set(sent) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    handled = record.read_text().split()
    assert set(handled) == set(sent), "a message was lost"
    assert len(handled) - len(sent) <= 1, "more than the in-flight message was replayed"


def test_a_message_that_crashes_its_consumer_every_time_is_dead_lettered_after_n_deliveries(
    settings, topic, tmp_path: Path, stack_env, read_topic
):
    """Each delivery kills the process (no exception to catch); the count survives in the committed offset."""
    crasher, after = _publish(settings, topic, 2)
    record = tmp_path / "handled.txt"
    record.touch()
    worker = [sys.executable, str(Path(__file__).with_name("kafka_worker.py")), topic, settings.consumer_group]
    env = {**os.environ, **stack_env, "HANDLER_MAX_DELIVERIES": "2", "TOPIC_DEAD_LETTER": settings.topic_dead_letter}
    exits = []
    for _ in range(4):
        process = subprocess.Popen([*worker, str(record), crasher], env=env)
        try:
            exits.append(process.wait(timeout=60))
        except subprocess.TimeoutExpired:
            break  # it no longer crashes: the message was dead-lettered, the next one handled
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert exits == [137, 137], "the two allowed deliveries each crashed the consumer"
    assert record.read_text().split() == [after]
    (letter,) = read_topic(settings, settings.topic_dead_letter, 1, DeadLetter.model_validate_json)
    assert "crashes its consumer" in letter.reason and letter.offset == 0


class _Rebalanced:
    """A loop's real consumer whose next poll first runs the group's revocation of its partitions, on the polling
    thread, as librdkafka runs the callback inside poll when the group moves a partition to another member."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop, self._consumer = loop, loop._consumer
        self.asked, self.done = threading.Event(), threading.Event()

    def poll(self, timeout: float):
        if self.asked.is_set() and not self.done.is_set():
            self._loop._on_revoke(self._consumer, self._consumer.assignment())
            self.done.set()
        return self._consumer.poll(timeout)

    def __getattr__(self, name: str):
        return getattr(self._consumer, name)


def test_a_delivery_cut_short_by_a_rebalance_does_not_count_as_a_crash(settings, topic, read_topic):
    """The group moves the partition away while the handler runs (an autoscaler adding or removing a member): the
    delivery is not counted against the message, so its next owner handles it even with one delivery allowed,
    where a count of crashes would dead-letter a healthy training after a few rebalances."""
    settings = settings.model_copy(update={"handler_max_deliveries": 1})
    (sent,) = _publish(settings, topic, 1)
    started, release = threading.Event(), threading.Event()

    def hold(message: ModelTraining) -> None:
        started.set()
        release.wait(60)

    first = ConsumerLoop(settings, topic, ModelTraining, hold)
    first._consumer = rebalance = _Rebalanced(first)
    worker = threading.Thread(target=first.run, kwargs={"max_messages": 1}, daemon=True)
    worker.start()
    assert started.wait(60), "the first consumer never started the message"
    rebalance.asked.set()
    assert rebalance.done.wait(30), "the revocation never ran"
    release.set()
    worker.join(60)

    assert _consume(settings, topic, 1) == [sent], "the message was not handled by its next owner"
    assert read_topic(settings, settings.topic_dead_letter, 1, DeadLetter.model_validate_json, timeout=3) == []


def test_a_poison_message_is_dead_lettered_and_the_consumer_goes_on(settings, topic, read_topic):
    producer = MessageProducer(settings)
    producer.send(topic, "k", b"{not json", {"origin": "fuzzer"})
    producer.send(topic, "k", json.dumps({"schema_version": 1, "config_hash": "short"}).encode(), None)
    good = _publish(settings, topic, 1)
    assert _consume(settings, topic, 3) == good
    letters = read_topic(settings, settings.topic_dead_letter, 2, DeadLetter.model_validate_json)
    assert base64.b64decode(letters[0].value_b64) == b"{not json"
    assert letters[0].headers == {"origin": "fuzzer"}
    assert "invalid message" in letters[0].reason
    assert "config_hash" in letters[1].reason
    assert committed_offsets(settings, settings.consumer_group, topic, [0]) == {0: 3}


def test_transient_failures_are_retried_and_permanent_ones_dead_lettered(settings, topic, read_topic):
    sent = _publish(settings, topic, 2)
    attempts: dict[str, int] = {}

    def flaky(message: ModelTraining) -> None:
        attempts[message.event_id] = attempts.get(message.event_id, 0) + 1
        if message.event_id == sent[0] and attempts[message.event_id] < 3:
            raise ConnectionError("S3 hiccup")
        if message.event_id == sent[1]:
            raise PermanentError("the object behind the claim is gone")

    handled = _consume(settings, topic, 2, flaky)
    assert handled == [sent[0]]
    assert attempts == {sent[0]: 3, sent[1]: 1}
    (letter,) = read_topic(settings, settings.topic_dead_letter, 1, DeadLetter.model_validate_json)
    assert "permanent failure" in letter.reason and "gone" in letter.reason


def test_a_handler_longer_than_max_poll_interval_keeps_its_partition(settings, topic):
    # The second message waits 12 s behind the first: lag, but a running handler is not a stall.
    update = {"max_poll_interval_ms": 6000, "session_timeout_ms": 6000, "consumer_stall_seconds": 3}
    settings = settings.model_copy(update=update)
    sent = _publish(settings, topic, 2)
    assignments: list[float] = []
    runs: list[str] = []

    def slow(message: ModelTraining) -> None:
        runs.append(message.event_id)
        if len(runs) == 1:
            time.sleep(12)

    loop = ConsumerLoop(settings, topic, ModelTraining, slow)
    original = loop._on_assign

    def counting(consumer, partitions):
        assignments.append(time.monotonic())
        original(consumer, partitions)

    loop._on_assign = counting
    assert loop.run(max_messages=2) == 2
    assert runs == sent, "the slow message was handed out twice"
    assert len(assignments) == 1, "the consumer was kicked out of its group and rejoined"
    assert committed_offsets(settings, settings.consumer_group, topic, [0]) == {0: 2}


def test_a_consumer_with_lag_that_consumes_nothing_turns_unhealthy_and_stops(settings, topic):
    settings = settings.model_copy(update={"consumer_stall_seconds": 6})
    _publish(settings, topic, 1)
    loop = ConsumerLoop(settings, topic, ModelTraining, lambda _: None)
    original = loop._on_assign

    def assign_paused(consumer, partitions):
        """Leave the partition paused, as librdkafka did after a lost membership before the fix."""
        original(consumer, partitions)
        consumer.pause(partitions)

    loop._on_assign = assign_paused
    timer = threading.Timer(60, loop.stop)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConsumerStalled, match="1 message"):
            loop.run()
    finally:
        timer.cancel()
    assert not loop.healthy
    assert time.monotonic() - started < 30


def test_a_consumer_that_starts_at_the_end_is_not_stalled_by_the_history_before_it(settings, topic):
    """Inference replicas join with auto.offset.reset=latest: older messages are no lag of theirs."""
    settings = settings.model_copy(update={"consumer_stall_seconds": 3})
    _publish(settings, topic, 2)
    latest = {"auto.offset.reset": "latest"}
    loop = ConsumerLoop(settings, topic, ModelTraining, lambda _: None, consumer_overrides=latest)
    timer = threading.Timer(10, loop.stop)
    timer.start()
    try:
        assert loop.run() == 0
    finally:
        timer.cancel()
    assert loop.healthy


def test_a_supervised_loop_that_stalls_is_replaced_by_a_fresh_consumer_and_a_stop_ends_it_within_a_bound(
    settings, topic
):
    settings = settings.model_copy(update={"consumer_stall_seconds": 4})
    sent = _publish(settings, topic, 1)
    stop, seen, loops = threading.Event(), [], []

    def work(stop: threading.Event) -> None:
        loop = ConsumerLoop(settings, topic, ModelTraining, lambda message: seen.append(message.event_id), until=stop)
        if not loops:  # the first one never fetches: its partition stays paused, as after a lost membership
            original = loop._on_assign
            loop._on_assign = lambda consumer, partitions: (original(consumer, partitions), consumer.pause(partitions))
        loops.append(loop)
        loop.run()

    supervisor = Supervisor("test consumer", work, stop, first_wait_s=0.5).start()
    try:
        deadline = time.monotonic() + 60
        while seen != sent and time.monotonic() < deadline:
            time.sleep(0.1)
        assert seen == sent and len(loops) == 2 and not loops[0].healthy
    finally:
        stopped = time.monotonic()
        stop.set()
        supervisor.join(timeout=30)
    assert not supervisor.is_alive() and time.monotonic() - stopped < 10
    assert committed_offsets(settings, settings.consumer_group, topic, [0]) == {0: 1}


def test_a_consumer_whose_scope_ended_has_left_its_group_at_once(settings, topic):
    """Closed, not abandoned: the group does not wait a session timeout for the member to come back."""
    group = f"{settings.consumer_group}-scope"
    with open_consumer(settings, group) as consumer:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert consumer.assignment()
    admin = AdminClient(settings.kafka_client_config())
    assert not admin.describe_consumer_groups([group])[group].result(timeout=10).members
