"""Consumers whose handler spans a broker outage keep consuming afterwards: real broker, SIGTERM and SIGKILL.

A worker process (slow_worker.py, the services' own run_consumer) holds its first message for as long
as the test says, like a training run; meanwhile the broker is stopped or killed and started again.
Then a second message must be handled by the same process, with nothing restarted but the broker.
The watchdog is off in these workers, so what recovers them is the consumer loop itself.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from flts.config import ConsumerSettings
from flts.kafka import MessageProducer
from flts.messages import DeadLetter, ModelTraining
from flts.stack import manager

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RECOVERY_LIMIT_S = 90


class Worker:
    """One slow_worker.py process and what it recorded: ``start``/``done`` lines with times."""

    def __init__(self, tmp_path: Path, stack_env: dict[str, str], settings: ConsumerSettings) -> None:
        self.record = tmp_path / "handled.txt"
        self.hold = tmp_path / "hold"
        self.log = tmp_path / "worker.log"
        self.record.touch()
        self.hold.touch()
        env = {
            **os.environ,
            **stack_env,
            "SERVICE_NAME": "fault-worker",
            "CONSUMER_GROUP": settings.consumer_group,
            "TOPIC_DEAD_LETTER": settings.topic_dead_letter,
            "SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "MAX_POLL_INTERVAL_MS": str(settings.max_poll_interval_ms),
            "HANDLER_BACKOFF_SECONDS": str(settings.handler_backoff_seconds),
            "CONSUMER_STALL_SECONDS": "0",
            "METRICS_PORT": "0",
        }
        script = Path(__file__).with_name("slow_worker.py")
        command = [sys.executable, str(script), settings.topic_model_training, str(self.record), str(self.hold)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def lines(self, kind: str, event_id: str) -> list[float]:
        rows = (line.split() for line in self.record.read_text().splitlines())
        return [float(t) for k, e, t in rows if (k, e) == (kind, event_id)]

    def wait_for(self, kind: str, event_id: str, timeout: float) -> float | None:
        """The time of the first ``kind`` line for the event, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the worker exited:\n{self.log.read_text()[-3000:]}"
            if found := self.lines(kind, event_id):
                return found[0]
            time.sleep(0.2)
        return None

    def stop(self) -> None:
        self.hold.unlink(missing_ok=True)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def worker(tmp_path, stack_env, settings, topic, stack_config):
    worker = Worker(tmp_path, stack_env, settings)
    try:
        yield worker
    finally:
        worker.stop()
        manager.up(stack_config, Console(stderr=True))  # whatever a failed test left down


def _publish(settings: ConsumerSettings) -> str:
    producer = MessageProducer(settings)
    event = ModelTraining(config_hash="e" * 64, model_type="GRU", status="RUNNING")
    producer.publish(settings.topic_model_training, event, timeout=60)
    producer.close()
    return event.event_id


def _start_training(worker: Worker, settings: ConsumerSettings) -> str:
    first = _publish(settings)
    assert worker.wait_for("start", first, 60), "the worker never started handling the first message"
    return first


def _recovery(worker: Worker, settings: ConsumerSettings, first: str, broker_back: float) -> float:
    """Publish a second message once the broker is back and the long handler has finished.

    Returns the seconds from the later of the two to the second message's handling.
    """
    first_done = worker.wait_for("done", first, 30)
    assert first_done, "the long handler never finished"
    second = _publish(settings)
    done = worker.wait_for("done", second, RECOVERY_LIMIT_S)
    assert done is not None, (
        f"the consumer did not handle a new message within {RECOVERY_LIMIT_S}s of the broker's return "
        f"(wedged):\n{worker.log.read_text()[-4000:]}"
    )
    recovery = done - max(broker_back, first_done)
    print(f"\nRECOVERY: second message handled {recovery:.1f}s after the broker was back and the handler done")
    return recovery


def _take_broker_down(stack_config, how: str) -> None:
    if how == "SIGTERM":
        manager.stop_part(stack_config, "kafka")  # an orderly shutdown: the broker leaves the cluster cleanly
    else:
        manager.kill_part(stack_config, "kafka")  # a crash: no shutdown at all


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_consumer_whose_handler_ends_during_a_broker_outage_consumes_again(
    how, worker, settings, stack_config, read_topic
):
    """The member is dropped mid-handler and rejoins after it: the case that left partitions paused forever."""
    first = _start_training(worker, settings)
    _take_broker_down(stack_config, how)
    time.sleep(settings.session_timeout_ms / 1000 * 2)  # past the session timeout: the member is dropped
    worker.hold.unlink()  # training ends while the broker is still down: its commit cannot succeed
    assert worker.wait_for("done", first, 30)
    time.sleep(5)
    manager.up(stack_config, Console(stderr=True))
    broker_back = time.time()
    MessageProducer(settings).send(settings.topic_model_training, "k", b"{poison", None, timeout=60)
    assert _recovery(worker, settings, first, broker_back) < RECOVERY_LIMIT_S
    (letter,) = read_topic(settings, settings.topic_dead_letter, 1, DeadLetter.model_validate_json)
    assert "invalid message" in letter.reason
    assert len(worker.lines("start", first)) == 2, "the uncommitted first message was not redone once"
    assert "not committing an offset this consumer no longer owns" in worker.log.read_text()


def test_a_consumer_whose_handler_outlasts_a_broker_restart_consumes_again(worker, settings, stack_config):
    """The member rejoins while the handler still runs: its partitions come back paused, then resume."""
    first = _start_training(worker, settings)
    manager.stop_part(stack_config, "kafka")
    manager.up(stack_config, Console(stderr=True))
    broker_back = time.time()
    time.sleep(settings.session_timeout_ms / 1000 + 4)  # the handler runs on well past the group's session timeout
    worker.hold.unlink()
    assert _recovery(worker, settings, first, broker_back) < RECOVERY_LIMIT_S
