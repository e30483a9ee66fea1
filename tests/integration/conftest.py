"""Fixtures of the consumer tests: settings with fresh topic and group names, and the topics themselves."""

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from flts.kafka import ensure_topics
from flts.settings import CommonSettings, ConsumerSettings, InferenceSettings

SettingsT = TypeVar("SettingsT", bound=CommonSettings)


@pytest.fixture
def fresh_settings(stack_env, monkeypatch) -> Callable[..., Any]:
    """Settings of a service class on the test stack; `{suffix}` in a string field becomes this test's own."""
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    suffix = uuid.uuid4().hex[:8]

    def make(settings_class: type[SettingsT], **fields: Any) -> SettingsT:
        return settings_class(**{k: v.format(suffix=suffix) if isinstance(v, str) else v for k, v in fields.items()})

    return make


@pytest.fixture
def settings(fresh_settings) -> ConsumerSettings:
    """Short group timeouts, so a dropped member shows within seconds; test_handlers has its own."""
    return fresh_settings(
        ConsumerSettings,
        topic_model_training="test-events-{suffix}",
        topic_dead_letter="test-dlq-{suffix}",
        consumer_group="test-group-{suffix}",
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
def inference_settings(fresh_settings) -> InferenceSettings:
    """Every topic fresh (created, one partition each) and a fresh group prefix; claims do not wait for eval."""
    topics = [name for name in InferenceSettings.model_fields if name.startswith("topic_")]
    fresh = fresh_settings(
        InferenceSettings,
        **{name: f"{InferenceSettings.model_fields[name].default}-{{suffix}}" for name in topics},
        consumer_group="test-inference-{suffix}",
        handler_backoff_seconds=0.1,
        scoring_wait_seconds=0,
    )
    ensure_topics(fresh, partitions=1)
    return fresh
