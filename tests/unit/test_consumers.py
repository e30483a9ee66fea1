"""The supervisor that keeps an embedded consumer worker running, and the scope a consumer lives in."""

import threading
import time

import pytest

from flts.consumers import Supervisor, open_consumer
from flts.settings import CommonSettings


def test_a_worker_that_raises_is_started_again_until_it_returns():
    runs: list[float] = []

    def work(stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise RuntimeError("the consumer failed")

    Supervisor("worker", work, threading.Event(), first_wait_s=0.05, last_wait_s=0.1).run()
    assert len(runs) == 3
    assert runs[1] - runs[0] >= 0.05 and runs[2] - runs[1] >= 0.1, "the wait between starts doubles"


def test_a_stop_ends_a_running_worker_and_its_supervisor_within_a_bound():
    stop = threading.Event()
    supervisor = Supervisor("worker", lambda stop: stop.wait(), stop).start()
    assert supervisor.is_alive()
    stop.set()
    supervisor.join(timeout=2)
    assert not supervisor.is_alive()


def test_a_stop_during_the_wait_before_a_restart_ends_the_supervisor_at_once():
    stop = threading.Event()
    failed = threading.Event()

    def work(_stop: threading.Event) -> None:
        failed.set()
        raise RuntimeError("the consumer failed")

    supervisor = Supervisor("worker", work, stop, first_wait_s=60).start()
    assert failed.wait(2)
    started = time.monotonic()
    stop.set()
    supervisor.join(timeout=2)
    assert not supervisor.is_alive() and time.monotonic() - started < 2


def test_a_worker_that_ends_by_itself_leaves_its_supervisor_dead_while_the_scope_goes_on():
    stop = threading.Event()
    supervisor = Supervisor("worker", lambda stop: None, stop).start()
    supervisor.join(timeout=2)
    assert not supervisor.is_alive() and not stop.is_set()


def test_a_consumer_is_closed_when_its_scope_ends_even_by_an_error():
    settings = CommonSettings(kafka_bootstrap_servers="127.0.0.1:1")  # never dialled: nothing is subscribed
    with pytest.raises(ValueError), open_consumer(settings, "scope-test") as consumer:
        raise ValueError("the worker failed")
    with pytest.raises(RuntimeError, match="closed"):
        consumer.poll(0)
