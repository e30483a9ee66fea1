"""Kafka on confluent-kafka: topic creation, a producer that waits for delivery, and the consumer loop.

The consumer loop is at-least-once: an offset is committed only after the handler has
finished (or the message was dead-lettered). The handler runs in a worker thread while
the loop keeps polling with the partitions paused, so a handler that runs for minutes
(training) never exceeds ``max.poll.interval.ms`` and never leaves the consumer group.

librdkafka keeps a partition's pause flag while the partition is revoked or lost and applies
it again when the partition comes back, so the loop sets the pause state of every partition
it is assigned itself (paused while a handler runs, resumed otherwise); without that a member
dropped during a long handler (a broker restart) rejoins with its partitions still paused and
never fetches again. A watchdog backs it up: lag with no progress for ``consumer_stall_seconds``
fails the consumer's health check and ends ``run`` with ``ConsumerStalled``.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Generic

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from tenacity import RetryCallState, RetryError, Retrying, retry_if_not_exception_type, wait_exponential

from flts.consumers import new_consumer, open_consumer
from flts.messages import DeadLetter, Message, MessageError, MessageT
from flts.observability import (
    BACKBONE_OUTAGES,
    CONSUMER_IDLE,
    CONSUMER_LAG,
    HANDLER_SECONDS,
    MESSAGES_HANDLED,
    log_context,
)
from flts.outages import is_outage
from flts.settings import CommonSettings, ConsumerSettings

log = logging.getLogger(__name__)


class PermanentError(Exception):
    """A handler failure that no retry can fix (bad data behind a claim): dead-letter it at once."""


class DeliveryTimeout(TimeoutError):
    """The broker did not acknowledge a message in time (down or unreachable): the one timeout a caller may
    answer as "the broker is unavailable", unlike any other TimeoutError from deeper down."""


class ConsumerStalled(RuntimeError):
    """Messages waited on this consumer's partitions and none was consumed for ``consumer_stall_seconds``."""


def ensure_topics(settings: CommonSettings, partitions: int = 3, timeout: float = 30.0) -> None:
    """Create the pipeline's topics if they do not exist (idempotent)."""
    admin = AdminClient(settings.kafka_client_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in settings.topics if t not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing],
        operation_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            log.info("topic created", extra={"topic": topic})
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class MessageProducer:
    """Idempotent producer: ``publish`` returns only once the broker has acknowledged the message."""

    def __init__(self, settings: CommonSettings, **overrides: Any) -> None:
        self._config = {
            **settings.kafka_client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "client.id": settings.service_name,
            **overrides,
        }
        self._client: Producer | None = None

    @property
    def _producer(self) -> Producer:
        """Connect on first use, so building a service (or a refusal in a test) does not dial Kafka."""
        if self._client is None:
            self._client = Producer(self._config)
        return self._client

    def publish(self, topic: str, message: Message, timeout: float = 30.0) -> None:
        self.send(topic, message.key, message.to_bytes(), {"kind": message.kind}, timeout)

    def send(
        self, topic: str, key: str | None, value: bytes, headers: dict[str, str] | None, timeout: float = 30.0
    ) -> None:
        outcome: dict[str, Any] = {}

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            outcome["error"] = err
            outcome["done"] = True

        self._producer.produce(topic, value=value, key=key, headers=headers or {}, on_delivery=on_delivery)
        deadline = time.monotonic() + timeout
        while "done" not in outcome:
            if time.monotonic() > deadline:
                raise DeliveryTimeout(f"no delivery report from Kafka for topic {topic} within {timeout}s")
            self._producer.poll(0.1)
        if outcome["error"] is not None:
            raise KafkaException(outcome["error"])

    def publish_many(self, topic: str, messages: Iterable[Message], timeout: float = 30.0) -> int:
        """Publish a batch (pipelined, not one round trip each); returns once the broker acknowledged them all."""
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(err)

        count = 0
        for message in messages:
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=message.to_bytes(),
                        key=message.key,
                        headers={"kind": message.kind},
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.05)
            count += 1
        if self._producer.flush(timeout) > 0:
            raise DeliveryTimeout(f"no delivery report from Kafka for topic {topic} within {timeout}s")
        if failures:
            raise KafkaException(failures[0])
        return count

    def close(self, timeout: float = 10.0) -> None:
        if self._client is not None:
            self._client.flush(timeout)


class TransactionStuck(TimeoutError):
    """A transactional call that did not return within its timeout. librdkafka can block past the timeout it was
    given when the coordinator went away mid-transaction (confluentinc/librdkafka#5456, #5511: a broker restart
    left the stream forecaster blocked for good in ``send_offsets_to_transaction``). The producer is unusable from
    then on: replace it; a new one with the same ``transactional.id`` fences it and aborts what it left open."""


class TransactionalProducer(MessageProducer):
    """A producer whose messages commit together with the consumer offsets that caused them (Kafka transactions,
    KIP-447): a batch's results and its offsets land both or neither, so a consumer killed mid-batch publishes
    nothing twice, and readers with ``isolation.level=read_committed`` (librdkafka's default) never see a result
    whose input will be handled again.

    ``transactional_id`` must be stable for one process slot and unique across live ones: a restart with the same
    id fences its predecessor and aborts the transaction it left open at once; with a new id the broker aborts
    it after ``transaction_timeout_ms``, and until then the group's offsets stay pending (a new owner waits).

    Every call that waits on the broker runs on a worker thread and is given up after its timeout (plus
    ``STUCK_GRACE_S``) with ``TransactionStuck``, so a caller never hangs on the client library.
    """

    STUCK_GRACE_S = 5.0

    def __init__(self, settings: CommonSettings, transactional_id: str, transaction_timeout_ms: int = 10_000) -> None:
        super().__init__(
            settings, **{"transactional.id": transactional_id, "transaction.timeout.ms": transaction_timeout_ms}
        )
        self._initialised = False
        self._open = False
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-transaction")
        self._stuck: str | None = None  # the call that never returned

    def _bounded(self, name: str, call: Callable[[], Any], timeout: float) -> Any:
        if self._stuck is not None:
            raise TransactionStuck(f"{self._stuck} never returned: this producer must be replaced")
        pending = self._calls.submit(call)
        try:
            return pending.result(timeout + self.STUCK_GRACE_S)
        except FutureTimeout:
            if pending.done():  # the call's own error, not our wait running out
                raise
            self._stuck = name
            self._calls.shutdown(wait=False)
            log.error("a Kafka transaction call is stuck; the producer will be replaced", extra={"call": name})
            raise TransactionStuck(f"{name} did not return within {timeout + self.STUCK_GRACE_S:.0f}s") from None

    def begin(self, timeout: float = 30.0) -> None:
        if not self._initialised:
            self._bounded("init_transactions", lambda: self._producer.init_transactions(timeout), timeout)
            self._initialised = True
        self._bounded("begin_transaction", self._producer.begin_transaction, timeout)
        self._open = True

    def commit(self, consumer: Consumer, messages: Iterable[Any], timeout: float = 30.0) -> None:
        """Commit the transaction with the offsets after ``messages`` (the batch ``consumer`` returned)."""
        after: dict[tuple[str, int], int] = {}
        for msg in messages:
            after[(msg.topic(), msg.partition())] = max(after.get((msg.topic(), msg.partition()), 0), msg.offset() + 1)
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in after.items()]
        group = consumer.consumer_group_metadata()
        self._bounded(
            "send_offsets_to_transaction",
            lambda: self._producer.send_offsets_to_transaction(offsets, group, timeout),
            timeout,
        )
        self._bounded("commit_transaction", lambda: self._producer.commit_transaction(timeout), timeout)
        self._open = False

    def abort(self, timeout: float = 30.0) -> None:
        """Abort the open transaction, if any (what it produced is never read by read_committed consumers)."""
        if self._open:
            self._open = False
            self._bounded("abort_transaction", lambda: self._producer.abort_transaction(timeout), timeout)


class ConsumerLoop(Generic[MessageT]):
    """Poll one topic, validate each message as ``message_type``, hand it to ``handler``, commit.

    - a payload that fails validation, or a handler raising ``PermanentError``, goes to the
      dead-letter topic with the reason and the original bytes and headers, then is committed;
    - any other exception is retried with exponential backoff, ``handler_max_attempts`` times,
      then dead-lettered;
    - on ``stop()`` (SIGTERM/SIGINT) the loop leaves the group; a message whose handler had not
      finished is not committed, so the next member of the group gets it again;
    - a message whose partition was revoked or lost while its handler ran is not committed either:
      the partition's owner (maybe this consumer again) gets it from the committed offset and redoes it;
    - with lag and no message consumed for ``consumer_stall_seconds`` (0: never), ``healthy`` turns
      False and ``run`` raises ``ConsumerStalled``: the process should be restarted.
    """

    def __init__(
        self,
        settings: ConsumerSettings,
        topic: str,
        message_type: type[MessageT],
        handler: Callable[[MessageT], None],
        *,
        group_id: str | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        until: threading.Event | None = None,
    ) -> None:
        """``until``: the scope the loop runs in (a `Supervisor`'s stop); setting it stops the loop as `stop` does."""
        self.settings = settings
        self.topic = topic
        self.message_type = message_type
        self.handler = handler
        self.group_id = group_id or settings.consumer_group
        self._stop = threading.Event()
        self._until = until or self._stop
        self._busy = False
        self._in_flight: tuple[str, int] | None = None  # the partition of the message being handled
        self._in_flight_gone: str | None = None  # "revoked" or "lost" once it left this consumer
        self._in_flight_msg: Any = None  # the message being handled, and the delivery count recorded for it
        self._in_flight_deliveries = 0
        self._last_progress = time.monotonic()
        self._next_check = 0.0
        self.stalled: str | None = None
        self.interrupted = False  # stopped while a handler ran: its message was left uncommitted
        config = {
            "client.id": settings.service_name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "session.timeout.ms": settings.session_timeout_ms,
            "partition.assignment.strategy": "cooperative-sticky",
            **(consumer_overrides or {}),
        }
        self._cooperative = "cooperative" in str(config["partition.assignment.strategy"])
        self._from_earliest = config["auto.offset.reset"] in ("earliest", "smallest", "beginning")
        self._consumer = new_consumer(settings, self.group_id, config)
        self._dead_letters = MessageProducer(settings)
        self.assigned = threading.Event()
        # The dead-letter count exists from the start (0), so Prometheus's increase() sees the first one.
        MESSAGES_HANDLED.labels(settings.service_name, topic, "dead_letter")

    @property
    def healthy(self) -> bool:
        """False once the watchdog found the consumer stalled (lag, nothing consumed): restart it."""
        return self.stalled is None

    def stop(self, *_: Any) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Asked to stop (`stop`, a signal) or its scope ended (``until``)."""
        return self._stop.is_set() or self._until.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, max_messages: int | None = None) -> int:
        """Consume until stopped (or ``max_messages`` were handled); returns how many were handled."""
        handled = 0
        self._consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("consumer started", extra={"topic": self.topic, "group": self.group_id})
        self._last_progress = time.monotonic()
        try:
            while not self.stopping and (max_messages is None or handled < max_messages):
                self._watch()
                msg = self._consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().fatal():
                        raise KafkaException(msg.error())
                    log.warning("consumer error", extra={"error": str(msg.error())})
                    continue
                if self._process(msg):
                    handled += 1
        finally:
            self._consumer.close()
            self._dead_letters.close()
            log.info("consumer stopped", extra={"topic": self.topic, "handled": handled})
        return handled

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Assign, then set each new partition's pause state: a flag left from before a revocation must go."""
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        if partitions:
            if self._busy:
                consumer.pause(partitions)
            else:
                consumer.resume(partitions)
        log.info("partitions assigned", extra={"partitions": _names(partitions), "busy": self._busy})
        self.assigned.set()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._released(partitions, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._released(partitions, "lost")

    def _released(self, partitions: list[TopicPartition], how: str) -> None:
        """Revoked or lost (librdkafka unassigns them after this callback); remember it for the in-flight message.

        A revoked partition is still ours during this callback: the in-flight message's delivery count is put back
        to what it was before this delivery, since a rebalance is not the message crashing its consumer (five
        autoscaler rebalances must not dead-letter a healthy training). A lost one can no longer be committed."""
        if self._in_flight in {(tp.topic, tp.partition) for tp in partitions} and self._in_flight_gone is None:
            self._in_flight_gone = how
            if how == "revoked" and self._in_flight_msg is not None:
                self._record_deliveries(self._in_flight_msg, self._in_flight_deliveries - 1)
        level = logging.WARNING if how == "lost" else logging.INFO
        log.log(level, f"partitions {how}", extra={"partitions": _names(partitions), "busy": self._busy})

    def _watch(self) -> None:
        """The stuck-consumer watchdog: raise ConsumerStalled after lag with no progress for too long.

        Each check also sets the consumer's lag and idle time (`flts_consumer_lag_messages`,
        `flts_consumer_idle_seconds`), which Prometheus alerts on before the watchdog restarts the process."""
        limit = self.settings.consumer_stall_seconds
        now = time.monotonic()
        if limit <= 0 or now < self._next_check:
            return
        self._next_check = now + max(1.0, min(limit / 4, 30.0))
        lag = self._lag()
        if lag is None:
            return  # the broker cannot say (it is down): neither progress nor a stall
        if not lag:
            self._last_progress = now
        idle = now - self._last_progress
        CONSUMER_LAG.labels(self.settings.service_name, self.topic).set(sum(lag.values()))
        CONSUMER_IDLE.labels(self.settings.service_name, self.topic).set(idle)
        if lag and idle >= limit:
            self.stalled = f"{sum(lag.values())} message(s) waiting on {lag} and none consumed for {idle:.0f}s"
            log.error("consumer stalled; restart it", extra={"reason": self.stalled, "group": self.group_id})
            raise ConsumerStalled(self.stalled)

    def _lag(self) -> dict[str, int] | None:
        """Messages on the assigned partitions beyond anything consumed or committed; None when unknown.

        A partition with neither starts where ``auto.offset.reset`` says: at the end, for "latest", has no lag.
        """
        assignment = self._consumer.assignment()
        if not assignment:
            return {}
        try:
            committed = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(assignment, timeout=5)}
            positions = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assignment)}
            lag = {}
            for tp in assignment:
                key = (tp.topic, tp.partition)
                low, high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                start = max(committed.get(key, -1), positions.get(key, -1))
                behind = high - max(low, start) if start >= 0 or self._from_earliest else 0
                if behind > 0:
                    lag[f"{tp.topic}[{tp.partition}]"] = behind
            return lag
        except KafkaException as exc:
            log.info("lag unknown", extra={"error": str(exc)})
            return None

    def _process(self, msg: Any) -> bool:
        """Handle one message; True when it was finished (committed), False when interrupted."""
        self._in_flight, self._in_flight_gone = (msg.topic(), msg.partition()), None
        try:
            return self._handle_in_flight(msg)
        finally:
            self._in_flight = self._in_flight_msg = None  # done: a later revocation concerns no message of ours

    def _handle_in_flight(self, msg: Any) -> bool:
        started = self._last_progress = time.monotonic()
        try:
            message = self.message_type.from_bytes(msg.value())
        except MessageError as exc:
            self._dead_letter(msg, f"invalid message: {exc}")
            return self._commit(msg)
        deliveries = self._count_delivery(msg)
        self._in_flight_msg, self._in_flight_deliveries = msg, deliveries
        if deliveries > self.settings.handler_max_deliveries:
            self._dead_letter(
                msg, f"delivered {deliveries - 1} times without finishing: it crashes its consumer (OOM, segfault)"
            )
            return self._commit(msg)
        with log_context(config_hash=getattr(message, "config_hash", None), event_id=message.event_id):
            error = self._handle_while_polling(message, msg)
            if error is _INTERRUPTED:
                log.warning("stopped before the handler finished; the message will be redelivered")
                self.interrupted = True
                if self._in_flight_gone is None:  # a revoked partition's offset is its new owner's to move
                    self._record_deliveries(msg, deliveries - 1)  # an orderly stop is not the message's fault
                return False
            if error is not None:
                self._dead_letter(msg, error)
            else:
                MESSAGES_HANDLED.labels(self.settings.service_name, self.topic, "ok").inc()
            self._last_progress = time.monotonic()
            HANDLER_SECONDS.labels(self.settings.service_name, self.topic).observe(self._last_progress - started)
            return self._commit(msg)

    def _handle_while_polling(self, message: MessageT, msg: Any) -> str | object | None:
        """Run the handler in a thread with the partitions paused, polling to stay in the group."""
        result: dict[str, str | None] = {}

        def work() -> None:
            result["error"] = self._call_with_retries(message)

        self._busy = True
        self._consumer.pause(self._consumer.assignment())
        worker = threading.Thread(target=work, name=f"handler-{self.topic}", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                if self.stopping:
                    return _INTERRUPTED
                stray = self._consumer.poll(0.2)
                if stray is not None and not stray.error():
                    self._rewind(stray)
                worker.join(0.0)
        finally:
            self._busy = False
            if not self.stopping:
                self._consumer.resume(self._consumer.assignment())
        return result.get("error")

    def _rewind(self, stray: Any) -> None:
        """A partition assigned during a rebalance delivered a message while we were busy: put it back."""
        tp = TopicPartition(stray.topic(), stray.partition(), stray.offset())
        self._consumer.pause([tp])
        try:
            self._consumer.seek(tp)
        except KafkaException as exc:  # revoked meanwhile: its next owner starts from the committed offset
            log.warning("could not put a message back", extra={"error": str(exc), "offset": stray.offset()})

    def _call_with_retries(self, message: MessageT) -> str | None:
        """Run the handler: a fault is retried ``handler_max_attempts`` times, an outage of a backbone is
        waited out for ``handler_outage_seconds``; returns the dead-letter reason, or None when handled."""
        attempts = max(1, self.settings.handler_max_attempts)

        def give_up(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome else None
            if error is not None and is_outage(error):
                return state.seconds_since_start >= self.settings.handler_outage_seconds or self.stopping
            return state.attempt_number >= attempts

        try:
            for attempt in Retrying(
                stop=give_up,
                wait=wait_exponential(
                    multiplier=self.settings.handler_backoff_seconds, max=self.settings.handler_backoff_max_seconds
                ),
                retry=retry_if_not_exception_type((PermanentError, MessageError)),
                reraise=False,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        MESSAGES_HANDLED.labels(self.settings.service_name, self.topic, "retried").inc()
                        log.warning("retrying handler", extra={"attempt": attempt.retry_state.attempt_number})
                    try:
                        self.handler(message)
                    except Exception as exc:
                        if is_outage(exc):
                            BACKBONE_OUTAGES.labels(self.settings.service_name).inc()
                            log.warning("a backbone is unreachable; waiting it out", extra={"error": repr(exc)[:500]})
                        raise
        except (PermanentError, MessageError) as exc:
            log.error("handler failed permanently", extra={"error": str(exc)})
            return f"permanent failure: {exc}"
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            tries = exc.last_attempt.attempt_number
            log.error("handler failed after retries", extra={"error": repr(cause), "attempts": tries})
            return f"failed after {tries} attempts: {cause!r}"
        return None

    def _dead_letter(self, msg: Any, reason: str) -> None:
        send_dead_letter(self._dead_letters, self.settings, msg, reason, self.group_id)

    def _count_delivery(self, msg: Any) -> int:
        """This delivery's number, kept in the group's committed offset metadata so a crash cannot lose it:
        before handling, the message's own offset is committed with the count (the position stays put)."""
        deliveries = 1
        try:
            (committed,) = self._consumer.committed([TopicPartition(msg.topic(), msg.partition())], timeout=10)
            metadata = committed.metadata or ""
            if committed.offset == msg.offset() and metadata.startswith(DELIVERIES_METADATA):
                deliveries += int(metadata.removeprefix(DELIVERIES_METADATA))
        except (KafkaException, ValueError) as exc:
            log.warning("delivery count not read; counting this one as the first", extra={"error": str(exc)})
        self._record_deliveries(msg, deliveries)
        return deliveries

    def _record_deliveries(self, msg: Any, deliveries: int) -> None:
        marker = TopicPartition(msg.topic(), msg.partition(), msg.offset(), f"{DELIVERIES_METADATA}{deliveries}")
        try:
            self._consumer.commit(offsets=[marker], asynchronous=False)
        except KafkaException as exc:
            log.warning("delivery count not recorded", extra={"error": str(exc)})

    def _commit(self, msg: Any) -> bool:
        if self._in_flight_gone is not None:
            log.warning(
                f"partition {self._in_flight_gone} while the handler ran; not committing an offset this consumer "
                "no longer owns: the partition's owner redoes the message",
                extra={"partition": msg.partition(), "offset": msg.offset()},
            )
            return True
        try:
            self._consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed; the message may be redelivered", extra={"error": str(exc)})
        return True


_INTERRUPTED = object()
DELIVERIES_METADATA = "flts-deliveries="


def send_dead_letter(producer: MessageProducer, settings: CommonSettings, msg: Any, reason: str, group: str) -> None:
    """Put a consumed message that cannot be handled on the dead-letter topic: the reason, the original bytes."""
    letter = DeadLetter(
        source_topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key().decode(errors="replace") if msg.key() else None,
        value_b64=base64.b64encode(msg.value() or b"").decode(),
        headers={k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])},
        reason=reason,
        consumer_group=group,
    )
    producer.send(settings.topic_dead_letter, letter.key, letter.model_dump_json().encode(), {"reason": reason[:500]})
    MESSAGES_HANDLED.labels(settings.service_name, msg.topic(), "dead_letter").inc()
    log.error("message dead-lettered", extra={"reason": reason, "offset": msg.offset()})


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


def committed_offsets(settings: CommonSettings, group_id: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The committed offset per partition of a group (-1 where none), for status pages and tests."""
    with open_consumer(settings, group_id) as consumer:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: (tp.offset if tp.offset != OFFSET_INVALID else -1) for tp in tps}
