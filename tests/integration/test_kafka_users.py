"""Least privilege in Kafka, on a real broker with SASL/SCRAM and the StandardAuthorizer: each service's own
Kafka user can do what its code does and is refused everything else.

The broker is the local stack's (`FLTS_STACK_KAFKA_SASL`: the admin formatted into its storage) on ports of
its own; `ensure_kafka_users` (what `flts init` runs) makes the users and ACLs of flts.kafka_users. It needs
Kafka's jars only, not the rest of the test stack, so it carries no `integration` marker.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC

import pandas as pd
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from pydantic import SecretStr
from rich.console import Console
from serving_models import forecast_event

from flts.kafka import ConsumerLoop, MessageProducer, TransactionalProducer, ensure_topics
from flts.kafka_users import SERVICE_GRANTS, SERVICES, ensure_kafka_users, kafka_user
from flts.messages import DeadLetter, Measurement, ModelTraining
from flts.settings import CommonSettings, EvalSettings, GatewaySettings, InferenceSettings
from flts.stack import StackConfig, common_settings, stack_environment
from flts.stack.config import kafka_password
from flts.stack.manager import stop_part
from flts.stack.parts import KafkaPart
from flts.stack.procs import spawn, wait_for
from gateway_container.forecast_feed import ForecastFeed, ForecastsUnavailable
from inference_container.champions import Champions
from inference_container.streaming import stream_forecasts, transactional_id

# A port pair beside the test stack's (FLTS_TEST_PORT_OFFSET moves both).
SASL_PORT_SHIFT = 50


@pytest.fixture(scope="module")
def sasl_stack(stack_config: StackConfig) -> Iterator[StackConfig]:
    """A fresh SASL/SCRAM broker with the pipeline's topics and every service's user and ACLs."""
    config = stack_config.model_copy(
        update={
            "state_dir": stack_config.state_dir.with_name(f"{stack_config.state_dir.name}-sasl-{uuid.uuid4().hex[:6]}"),
            "kafka_port": stack_config.kafka_port + SASL_PORT_SHIFT,
            "kafka_controller_port": stack_config.kafka_controller_port + SASL_PORT_SHIFT,
            "kafka_sasl": True,
        }
    )
    for directory in (config.logs_dir, config.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    kafka = KafkaPart(config)
    kafka.install(Console(stderr=True))
    kafka.configure()
    pid = spawn(kafka.command(), kafka.env(), kafka.log_file, kafka.home)
    kafka.pid_file.write_text(f"{pid}\n")
    try:
        assert wait_for(kafka.ready, 120, interval=0.5), kafka.log_file.read_text()[-3000:]
        admin = common_settings(config)
        ensure_topics(admin)
        passwords = {service: kafka_password(config, kafka_user(service)) for service in SERVICES}
        assert ensure_kafka_users(admin, passwords) == [kafka_user(s) for s in SERVICES]
        assert ensure_kafka_users(admin, passwords) == [kafka_user(s) for s in SERVICES]  # idempotent
        yield config
    finally:
        stop_part(config, "kafka")
        shutil.rmtree(config.state_dir, ignore_errors=True)


def as_service(config: StackConfig, service: str) -> CommonSettings:
    return common_settings(config, service)


def produce_error(settings: CommonSettings, topic: str) -> int | None:
    """None when the broker took the message; the error code otherwise."""
    producer = MessageProducer(settings, **{"message.timeout.ms": 10000})
    try:
        producer.send(topic, "k", b"{}", None, timeout=15)
    except KafkaException as exc:
        return exc.args[0].code()
    finally:
        producer.close(timeout=1)
    return None


def consume_error(settings: CommonSettings, topic: str, group: str) -> int | None:
    """None when a message came back through ``group``; the error code the broker answered otherwise."""
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": group, "auto.offset.reset": "earliest", "log_level": 0}
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return msg.error().code()
            consumer.commit(message=msg, asynchronous=False)  # what the consumer loop does after its work
            return None
        raise AssertionError(f"neither a message nor an error from {topic} within 30 s")
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def one_message_everywhere(sasl_stack: StackConfig) -> StackConfig:
    """One message in every topic, written by the admin, so every read below has something to return."""
    admin = common_settings(sasl_stack)
    for topic in admin.topics:
        assert produce_error(admin, topic) is None
    return sasl_stack


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_write_only_the_topics_its_code_produces(sasl_stack: StackConfig, service: str) -> None:
    settings = as_service(sasl_stack, service)
    allowed = {getattr(settings, field) for field in SERVICE_GRANTS[service].produces}
    outcomes = {topic: produce_error(settings, topic) for topic in settings.topics}
    assert {topic for topic, error in outcomes.items() if error is None} == allowed
    assert {error for topic, error in outcomes.items() if topic not in allowed} == {
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    }


@pytest.mark.parametrize("service", [s for s in SERVICES if SERVICE_GRANTS[s].groups])
def test_a_consumer_reads_its_topics_in_its_own_group_and_nothing_else(
    one_message_everywhere: StackConfig, service: str
) -> None:
    settings = as_service(one_message_everywhere, service)
    grants = SERVICE_GRANTS[service]
    own_group = f"{grants.groups[0]}{uuid.uuid4().hex[:6]}"
    for field in grants.consumes:
        assert consume_error(settings, getattr(settings, field), own_group) is None, field
    not_consumed = next(t for t in ("topic_forecasts", "topic_dataset_uploaded") if t not in grants.consumes)
    assert consume_error(settings, getattr(settings, not_consumed), own_group) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    other_group = f"flts-someone-else-{uuid.uuid4().hex[:6]}"
    assert (
        consume_error(settings, getattr(settings, grants.consumes[0]), other_group)
        == KafkaError.GROUP_AUTHORIZATION_FAILED
    )


def test_the_consumer_loop_handles_and_dead_letters_with_a_scoped_user(sasl_stack: StackConfig) -> None:
    """Eval's own user: its group, offset commits with the delivery count, and a poison message dead-lettered."""
    settings = EvalSettings(**{k.lower(): v for k, v in stack_environment(sasl_stack, "eval").items()})
    admin = common_settings(sasl_stack)
    poison = f"not json {uuid.uuid4().hex}".encode()
    MessageProducer(admin).send(settings.topic_model_training, None, poison, None)
    loop = ConsumerLoop(settings, settings.topic_model_training, ModelTraining, lambda _message: None)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        assert _dead_lettered(admin, poison, timeout=60), "eval's user did not dead-letter the poison message"
    finally:
        loop.stop()
        thread.join(30)


def _dead_lettered(admin: CommonSettings, original: bytes, timeout: float) -> bool:
    def is_original(msg: Message) -> bool:
        try:
            return base64.b64decode(DeadLetter.model_validate_json(msg.value()).value_b64) == original
        except ValueError:
            return False

    return _committed_message(admin, admin.topic_dead_letter, is_original, timeout)


def _committed_message(admin: CommonSettings, topic: str, wanted: Callable[[Message], bool], timeout: float) -> bool:
    """Whether a committed message of ``topic`` satisfies ``wanted`` within ``timeout`` s (read as the admin)."""
    consumer = Consumer(
        {**admin.kafka_client_config(), "group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and wanted(msg):
                return True
        return False
    finally:
        consumer.close()


def test_the_gateway_reads_a_tenants_forecasts_without_a_group_and_not_a_topic_it_is_not_granted(
    one_message_everywhere: StackConfig,
) -> None:
    """`GET /forecasts`' reader (assign and seek, read_committed, nothing committed) under the gateway's own user."""
    environment = stack_environment(one_message_everywhere, "gateway")
    gateway = GatewaySettings(**{k.lower(): v for k, v in environment.items()}, auth_enabled=False)
    identifier, at = f"sasl-{uuid.uuid4().hex[:6]}", pd.Timestamp.now(tz=UTC)
    forecast = forecast_event(identifier, at)
    feed = ForecastFeed(gateway, identifier)
    try:
        MessageProducer(common_settings(one_message_everywhere)).publish(gateway.topic_forecasts, forecast)
        found, deadline = [], time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            found = feed.read()
        assert [f.event_id for _, f in found] == [forecast.event_id]
    finally:
        feed.close()
    # A topic it has no grant on is refused when the reader starts; one it may only write, at the first read.
    unknown = gateway.model_copy(update={"topic_forecasts": gateway.topic_model_selected})
    with pytest.raises((ForecastsUnavailable, KafkaException), match="TOPIC_AUTHORIZATION_FAILED"):
        ForecastFeed(unknown, identifier)
    written = ForecastFeed(gateway.model_copy(update={"topic_forecasts": gateway.topic_measurements}), identifier)
    try:
        with pytest.raises(ForecastsUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                written.read()
    finally:
        written.close()


def test_a_wrong_password_is_refused(sasl_stack: StackConfig) -> None:
    gateway = as_service(sasl_stack, "gateway")
    settings = gateway.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    assert produce_error(settings, settings.topic_dataset_uploaded) in {
        KafkaError._AUTHENTICATION,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }


def test_the_inference_user_forecasts_live_rows_in_transactions_and_others_may_not_use_its_ids(
    one_message_everywhere: StackConfig, persistence_model, processed, raw_data
) -> None:
    """The stream forecaster's transactions (forecasts with the offsets they answer) under inference's ACLs."""
    settings = InferenceSettings(
        **{k.lower(): v for k, v in stack_environment(one_message_everywhere, "inference").items()},
        consumer_group=f"flts-inference-{uuid.uuid4().hex[:6]}",
    )
    admin = common_settings(one_message_everywhere)
    identifier = f"sasl-{uuid.uuid4().hex[:6]}"
    champions = Champions()
    identity = dataclasses.replace(persistence_model.identity, identifier=identifier)
    model = dataclasses.replace(persistence_model, identity=identity)
    champions.install(model, model.window_from_processed(processed.test.iloc[:100]))
    row = raw_data[1].iloc[100]
    measurement = Measurement(
        identifier=identifier,
        ts=pd.Timestamp(row["time"]).tz_localize(UTC),
        values={name: float(row[name]) for name in raw_data[1].columns if name != "time"},
    )
    stop = threading.Event()
    worker = threading.Thread(target=stream_forecasts, args=(settings, champions, stop), daemon=True)
    worker.start()
    try:
        MessageProducer(admin).publish(settings.topic_measurements, measurement)
        made = _committed_message(admin, admin.topic_forecasts, lambda msg: msg.key() == identifier.encode(), 60)
        assert made, "no committed forecast from inference's user"
    finally:
        stop.set()
        worker.join(30)
    gateway = TransactionalProducer(as_service(one_message_everywhere, "gateway"), transactional_id(settings))
    with pytest.raises(KafkaException) as refused:
        gateway.begin(timeout=15)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
