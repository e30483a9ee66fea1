"""`flts dead-letters list|replay` against a real broker: a poison message is listed, re-driven once; a letter
naming a topic that is not the pipeline's is not (tests/unit/test_dead_letter_replay.py: every pair)."""

import base64
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from flts.deadletters import REPLAYED_FROM, ReplayRefused, latest_letters, list_letters, replay
from flts.kafka import ConsumerLoop, MessageProducer, PermanentError
from flts.messages import DeadLetter, ModelTraining
from flts.settings import ConsumerSettings, EvalSettings

pytestmark = pytest.mark.integration
# Replay publishes only to a topic the pipeline consumes, from the group that consumes it: model-training's is eval's.
EVAL_GROUP = f"{EvalSettings().consumer_group}-test-{uuid.uuid4().hex[:6]}"


def _events(settings: ConsumerSettings, consumer_group: str) -> list[tuple[ModelTraining, dict[str, str]]]:
    """What a fresh consumer of the source topic sees: each event with its headers."""
    config = {"bootstrap.servers": settings.kafka_bootstrap_servers, "auto.offset.reset": "earliest"}
    consumer = Consumer({**config, "group.id": consumer_group})
    consumer.subscribe([settings.topic_model_training])
    seen = []
    for _ in range(20):
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
            seen.append((ModelTraining.from_bytes(msg.value()), headers))
    consumer.close()
    return seen


def test_a_dead_letter_is_listed_with_its_reason_and_replayed_exactly_once(settings, topic):
    """On fresh events and dead-letter topics (conftest)."""
    event = ModelTraining(config_hash="e" * 64, model_type="GRU", status="SUCCESS")
    MessageProducer(settings).publish(settings.topic_model_training, event)

    def refuse(_: ModelTraining) -> None:
        raise PermanentError("the model registry lost this version")

    ConsumerLoop(settings, settings.topic_model_training, ModelTraining, refuse, group_id=EVAL_GROUP).run(
        max_messages=1
    )

    (listed,) = list_letters(settings)
    assert listed.letter.source_topic == settings.topic_model_training
    assert "lost this version" in listed.letter.reason

    (replayed,) = replay(settings).sent
    assert replayed.position == listed.position
    assert replay(settings).sent == [], "a second replay re-sends nothing"
    events = _events(settings, f"check-{uuid.uuid4().hex[:6]}")
    assert [e.event_id for e, _ in events] == [event.event_id, event.event_id]
    assert events[1][1][REPLAYED_FROM] == f"{settings.topic_dead_letter}/{listed.position}"
    assert events[1][1]["kind"] == "model-training", "the original headers travel with the replay"


def test_the_status_page_counts_every_dead_letter_and_reads_only_the_latest(settings, topic):
    """`latest_letters` (the page's dead-letter count): the count of the whole topic, the newest few read."""
    producer = MessageProducer(settings)
    for number in range(4):
        event = ModelTraining(config_hash=f"{number}" * 64, model_type="GRU", status="SUCCESS")
        producer.publish(settings.topic_model_training, event)

    def refuse(event: ModelTraining) -> None:
        raise PermanentError(f"refused {event.config_hash[0]}")

    ConsumerLoop(settings, settings.topic_model_training, ModelTraining, refuse).run(max_messages=4)

    total, latest = latest_letters(settings, count=2)
    assert total == 4
    assert [item.letter.reason for item in latest] == ["permanent failure: refused 3", "permanent failure: refused 2"]


def test_a_dead_letter_naming_a_topic_not_the_pipelines_is_not_replayed_and_stays_until_passed_over(settings, topic):
    """Any consumer may write a dead letter, and replay publishes with the admin's rights: a letter naming another
    topic stops the replay (nothing published, nothing committed) until the operator passes over it."""
    elsewhere = f"not-the-pipeline-{uuid.uuid4().hex[:8]}"
    forged = DeadLetter(
        source_topic=elsewhere, partition=0, offset=0, key=None, value_b64=base64.b64encode(b"{}").decode(),
        headers={}, reason="forged", consumer_group=EVAL_GROUP,
    )  # fmt: skip
    MessageProducer(settings).send(settings.topic_dead_letter, None, forged.model_dump_json().encode(), {})

    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(elsewhere, num_partitions=1, replication_factor=1)])[elsewhere].result(timeout=30)

    def published() -> int:
        """Messages on the other topic (it exists: the broker does not create topics on demand)."""
        consumer = Consumer({**settings.kafka_client_config(), "group.id": f"check-{uuid.uuid4().hex[:6]}"})
        try:
            return consumer.get_watermark_offsets(TopicPartition(elsewhere, 0), timeout=10)[1]
        finally:
            consumer.close()

    for _ in range(2):  # refused again: its offset was not committed
        with pytest.raises(ReplayRefused, match=f"topic '{elsewhere}' is not one of the pipeline's consumed topics"):
            replay(settings)
    assert published() == 0

    passed_over = replay(settings, skip_refused=True)
    assert passed_over.sent == [] and [letter.letter.source_topic for letter, _ in passed_over.skipped] == [elsewhere]
    assert replay(settings).sent == [] and published() == 0
    assert [letter.letter.reason for letter in list_letters(settings)] == ["forged"], "it stays on the topic"
