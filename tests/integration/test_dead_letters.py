"""`flts dead-letters list|replay` against a real broker: a poison message is listed, re-driven once."""

import uuid

import pytest
from confluent_kafka import Consumer

from flts.config import ConsumerSettings
from flts.deadletters import REPLAYED_FROM, latest_letters, list_letters, replay
from flts.kafka import ConsumerLoop, MessageProducer, PermanentError
from flts.messages import ModelTraining

pytestmark = pytest.mark.integration


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

    ConsumerLoop(settings, settings.topic_model_training, ModelTraining, refuse).run(max_messages=1)

    (listed,) = list_letters(settings)
    assert listed.letter.source_topic == settings.topic_model_training
    assert "lost this version" in listed.letter.reason

    (replayed,) = replay(settings)
    assert replayed.position == listed.position
    assert replay(settings) == [], "a second replay re-sends nothing"
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
