"""Fixtures of the consumer tests: settings with fresh topic and group names, and the topics themselves."""

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from flts.config import ConsumerSettings


@pytest.fixture
def settings(stack_env, monkeypatch) -> ConsumerSettings:
    """Short group timeouts, so a dropped member shows within seconds; test_handlers has its own."""
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    suffix = uuid.uuid4().hex[:8]
    return ConsumerSettings(
        topic_model_training=f"test-events-{suffix}",
        topic_dead_letter=f"test-dlq-{suffix}",
        consumer_group=f"test-group-{suffix}",
        session_timeout_ms=6000,
        max_poll_interval_ms=10000,
        handler_backoff_seconds=0.1,
    )


@pytest.fixture
def topic(settings: ConsumerSettings) -> str:
    """The events topic and the dead-letter topic, one partition each."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    names = [settings.topic_model_training, settings.topic_dead_letter]
    for future in admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names]).values():
        future.result(timeout=30)
    return settings.topic_model_training
