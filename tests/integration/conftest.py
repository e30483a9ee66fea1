"""Fixtures of the consumer tests: settings with fresh topic and group names, and the topics themselves."""

import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from flts.config import ConsumerSettings, InferenceSettings
from flts.kafka import ensure_topics


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


@pytest.fixture
def inference_settings(settings) -> InferenceSettings:
    """Every topic fresh (created, one partition each) and a fresh group prefix; claims do not wait for eval."""
    suffix = uuid.uuid4().hex[:8]
    topics = [name for name in InferenceSettings.model_fields if name.startswith("topic_")]
    fresh = InferenceSettings(
        **{name: f"{InferenceSettings.model_fields[name].default}-{suffix}" for name in topics},
        consumer_group=f"test-inference-{suffix}",
        handler_backoff_seconds=0.1,
        scoring_wait_seconds=0,
    )
    ensure_topics(fresh, partitions=1)
    return fresh
