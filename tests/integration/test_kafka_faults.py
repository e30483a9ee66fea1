"""Consumers whose handler spans a broker outage keep consuming afterwards: real broker, SIGTERM and SIGKILL.

A worker process (slow_worker.py, the services' own run_consumer) holds its first message for as long
as the test says, like a training run; meanwhile the broker is stopped or killed and started again.
Then a second message must be handled by the same process, with nothing restarted but the broker.
The watchdog is off in these workers, so what recovers them is the consumer loop itself.
"""

import signal
import time
import uuid

import pytest
from integration_support import Worker, upload_dataset
from rich.console import Console

from flts.config import PipelineConfig
from flts.kafka import MessageProducer, committed_offsets, ensure_topics
from flts.messages import DeadLetter, ModelTraining, TrainingData
from flts.settings import ConsumerSettings, PreprocessSettings
from flts.stack import manager
from flts.storage import ObjectStore
from flts.tracking import Tracker
from preprocess_container.service import Preprocessor

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RECOVERY_LIMIT_S = 90


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


def _until_logged(worker: Worker, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in worker.log.read_text():
            return True
        time.sleep(0.3)
    return False


def test_a_claim_whose_partition_moves_mid_training_is_trained_once_and_not_committed_by_its_old_owner(
    settings, stack_env, tmp_path, read_topic
):
    """Two trainer processes in one group. The one training is frozen (SIGSTOP) past its session timeout, so the
    group gives its partition to the other: the new owner waits for the live run instead of training a second
    one, and the old owner, thawed, finishes but does not commit an offset it no longer owns."""
    run = uuid.uuid4().hex[:8]
    # Its own claim topics: the test stack's inference service must not meet a lineage eval never decides.
    lineage = {
        "topic_training_data": f"rb-training-{run}",
        "topic_inference_data": f"rb-inference-{run}",
        "mlflow_experiment": f"rb-{run}",
    }
    fields = {k: v for k, v in settings.model_dump().items() if k in PreprocessSettings.model_fields}
    trainer = PreprocessSettings(**{**fields, **lineage, "topic_model_training": settings.topic_model_training})
    ensure_topics(trainer, partitions=1)
    upload = upload_dataset(ObjectStore(trainer), trainer, seed=51)
    Preprocessor(trainer, PipelineConfig()).handle(upload)
    (claim,) = read_topic(trainer, trainer.topic_training_data, 1, TrainingData.from_bytes)
    env = {key.upper(): value for key, value in lineage.items()}
    env["TOPIC_MODEL_TRAINING"] = settings.topic_model_training

    def trainer_process(name: str) -> Worker:
        (tmp_path / name).mkdir()
        workers.append(Worker(tmp_path / name, stack_env, settings, trainer.topic_training_data, "train", env))
        return workers[-1]

    workers: list[Worker] = []
    try:
        # The second joins once the first trains the claim: started together, either may get the partition.
        old = trainer_process("old")
        assert old.wait_for("start", claim.config_hash, 120) is not None, "the first trainer never started"
        new = trainer_process("new")
        assert _until_logged(new, "partitions assigned", 90), "the second trainer never joined the group"
        old.process.send_signal(signal.SIGSTOP)
        assert _until_logged(new, "another trainer is training this lineage", 60), new.log.read_text()[-3000:]
        old.process.send_signal(signal.SIGCONT)
        assert _until_logged(old, "partitions lost", 30) or _until_logged(old, "partitions revoked", 5)
        old.hold.unlink()
        new.hold.unlink()
        deadline = time.monotonic() + 90
        while committed_offsets(settings, settings.consumer_group, trainer.topic_training_data, [0])[0] != 1:
            assert time.monotonic() < deadline, (
                f"the new owner never committed the claim:\n{new.log.read_text()[-3000:]}"
            )
            time.sleep(1)
    finally:
        for worker in workers:
            worker.process.send_signal(signal.SIGCONT)
            worker.stop()

    assert "not committing an offset this consumer no longer owns" in old.log.read_text()
    assert new.lines("start", claim.config_hash) == [], "the new owner trained the claim a second time"
    tracker = Tracker(trainer)
    assert [r.status for r in tracker.lineage_runs(claim.config_hash, "PERSISTENCE")] == ["FINISHED"]
    assert len(tracker.model_versions(upload.identifier)) == 1
