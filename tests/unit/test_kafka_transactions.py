"""TransactionalProducer never hangs its caller: a call into librdkafka that blocks past its own timeout
(confluentinc/librdkafka#5456: `send_offsets_to_transaction` after the coordinator went away) is given up."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer

from flts.kafka import TransactionalProducer, TransactionStuck
from flts.settings import CommonSettings


class _HangsOnOffsets:
    """librdkafka's transactional calls as they behave in that bug: every call returns but the offsets one."""

    def __init__(self, released: threading.Event) -> None:
        self.released = released

    def init_transactions(self, timeout):
        pass

    def begin_transaction(self):
        pass

    def send_offsets_to_transaction(self, offsets, group_metadata, timeout):
        self.released.wait()

    def abort_transaction(self, timeout):
        pass


def test_a_transaction_call_that_never_returns_is_given_up_and_the_producer_refuses_every_later_call():
    settings = CommonSettings(kafka_bootstrap_servers="127.0.0.1:9")
    producer = TransactionalProducer(settings, "flts-test@host:1")
    producer.STUCK_GRACE_S = 0.2
    released = threading.Event()
    producer._client = _HangsOnOffsets(released)
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "flts-test"})
    try:
        producer.begin()
        started = time.monotonic()
        with pytest.raises(TransactionStuck, match="send_offsets_to_transaction"):
            producer.commit(consumer, [], timeout=0.5)
        assert time.monotonic() - started < 5
        with pytest.raises(TransactionStuck, match="must be replaced"):
            producer.begin()
    finally:
        released.set()
        consumer.close()


def test_a_call_s_own_timeout_error_is_raised_as_it_is_not_taken_for_a_stuck_call():
    settings = CommonSettings(kafka_bootstrap_servers="127.0.0.1:9")
    producer = TransactionalProducer(settings, "flts-test@host:2")

    def times_out():
        raise TimeoutError("the call's own")

    with pytest.raises(TimeoutError, match="the call's own") as raised:
        producer._bounded("init_transactions", times_out, timeout=1.0)
    assert not isinstance(raised.value, TransactionStuck)
    producer._bounded("begin_transaction", lambda: None, timeout=1.0)  # and the producer is still usable
