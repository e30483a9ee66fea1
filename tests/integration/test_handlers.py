"""Service handlers on the real stack: idempotency, a missing object, a failing training, a broker restart."""

from __future__ import annotations

import io
import threading
import time
import uuid

import pytest
from rich.console import Console

from eval_container.service import Evaluator
from flts.config import EvalSettings, EvaluationConfig, PipelineConfig, PreprocessSettings
from flts.data.generate import generate_lte_dataset
from flts.kafka import ConsumerLoop, MessageProducer, PermanentError, ensure_topics
from flts.messages import DatasetUploaded, ModelSelected, ModelTraining, ObjectRef, TrainingData
from flts.models.baselines import PersistenceForecaster
from flts.stack import manager
from flts.storage import ObjectStore
from flts.tracking import Tracker
from flts.train import TrainingJob
from preprocess_container.service import Preprocessor

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack_env, monkeypatch) -> PreprocessSettings:
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    suffix = uuid.uuid4().hex[:8]
    settings = PreprocessSettings(
        topic_training_data=f"it-training-{suffix}",
        topic_inference_data=f"it-inference-{suffix}",
        topic_model_training=f"it-events-{suffix}",
        topic_model_selected=f"it-selected-{suffix}",
        mlflow_experiment=f"it-{suffix}",
    )
    ensure_topics(settings, partitions=1)
    return settings


def _upload(
    store: ObjectStore, settings: PreprocessSettings, seed: int, identifier: str | None = None
) -> DatasetUploaded:
    train, test = generate_lte_dataset(train_rows=800, test_rows=200, seed=seed)
    refs = {}
    for name, frame in (("train", train), ("test", test)):
        stored = store.put_stream(
            f"s3://{settings.bucket_datasets}/it/{uuid.uuid4().hex}/{name}.csv",
            io.BytesIO(frame.to_csv(index=False).encode()),
        )
        refs[name] = ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=len(frame))
    return DatasetUploaded(
        dataset_id=uuid.uuid4().hex[:16],
        identifier=identifier or f"it-{seed}-{uuid.uuid4().hex[:6]}",
        train=refs["train"],
        test=refs["test"],
        filename="t.csv",
        columns=[],
    )


@pytest.fixture
def claim(settings, read_topic) -> TrainingData:
    store = ObjectStore(settings)
    Preprocessor(settings, PipelineConfig()).handle(_upload(store, settings, seed=21))
    (claim,) = read_topic(settings, settings.topic_training_data, 1, TrainingData.from_bytes)
    return claim


def test_preprocess_writes_the_claim_once_and_only_republishes_it(settings, claim, read_topic):
    store = ObjectStore(settings)
    prefix = claim.metadata.uri.rsplit("/", 1)[0]
    bucket, key = prefix[5:].split("/", 1)
    before = {o["Key"]: o["LastModified"] for o in store.list(bucket, key)}
    assert {k.rsplit("/", 1)[1] for k in before} >= {
        "train.parquet",
        "validation.parquet",
        "test.parquet",
        "metadata.json",
        "scaler.json",
        "claim.json",
    }
    upload = _upload(store, settings, seed=21).model_copy(update={"identifier": claim.identifier})
    Preprocessor(settings, PipelineConfig()).handle(upload)
    claims = read_topic(settings, settings.topic_training_data, 2, TrainingData.from_bytes)
    assert [c.config_hash for c in claims] == [claim.config_hash] * 2
    assert {o["Key"]: o["LastModified"] for o in store.list(bucket, key)} == before


def test_a_missing_object_behind_a_claim_is_a_permanent_failure(settings):
    store = ObjectStore(settings)
    upload = _upload(store, settings, seed=22)
    store.delete(upload.train.uri)
    with pytest.raises(PermanentError, match="missing"):
        Preprocessor(settings, PipelineConfig()).handle(upload)


def test_the_same_claim_twice_trains_once(settings, claim, read_topic):
    job = TrainingJob(settings, {"PERSISTENCE": lambda data, _: (PersistenceForecaster(data.layout), {})})
    job.handle(claim)
    job.handle(claim)
    runs = Tracker(settings).lineage_runs(claim.config_hash, "PERSISTENCE")
    assert [r.status for r in runs] == ["FINISHED"]
    events = read_topic(settings, settings.topic_model_training, 3, ModelTraining.from_bytes)
    assert [e.status for e in events] == ["RUNNING", "SUCCESS", "SUCCESS"]
    assert events[1].run_id == events[2].run_id == runs[0].run_id
    assert events[2].model_version == events[1].model_version is not None


def test_a_failing_training_is_reported_not_retried(settings, claim, read_topic):
    def broken(data, _):
        raise FloatingPointError("loss is NaN")

    TrainingJob(settings, {"GRU": broken}).handle(claim)
    (run,) = Tracker(settings).lineage_runs(claim.config_hash, "GRU")
    assert run.status == "FAILED"
    assert "loss is NaN" in (Tracker(settings).run_summary(run.run_id).error or "")
    events = read_topic(settings, settings.topic_model_training, 2, ModelTraining.from_bytes)
    assert [e.status for e in events] == ["RUNNING", "FAILED"]
    assert "loss is NaN" in events[1].error


def test_publishing_survives_a_broker_restart(settings, stack_config, read_topic):
    producer = MessageProducer(settings)
    event = ModelTraining(config_hash="d" * 64, model_type="GRU", status="RUNNING")
    producer.publish(settings.topic_model_training, event)
    manager.kill_part(stack_config, "kafka")
    manager.up(stack_config, Console(stderr=True))
    producer.publish(settings.topic_model_training, event, timeout=60)
    assert [e.event_id for e in read_topic(settings, settings.topic_model_training, 2, ModelTraining.from_bytes)] == [
        event.event_id
    ] * 2


PERSISTENCE = {"PERSISTENCE": lambda data, _: (PersistenceForecaster(data.layout), {})}


def _evaluator(settings: PreprocessSettings, expected: list[str]) -> Evaluator:
    fields = {k: v for k, v in settings.model_dump().items() if k in EvalSettings.model_fields}
    eval_settings = EvalSettings(**{**fields, "service_name": "eval", "consumer_group": "flts-eval"})
    return Evaluator(eval_settings, PipelineConfig(evaluation=EvaluationConfig(expected_model_types=expected)))


def test_eval_promotes_once_and_a_later_equal_model_changes_nothing(settings, claim, read_topic):
    evaluator = _evaluator(settings, ["PERSISTENCE"])
    TrainingJob(settings, PERSISTENCE).handle(claim)
    first = evaluator.evaluate(claim.config_hash, claim.identifier)
    assert first is not None and first.winner.model_type == "PERSISTENCE"
    champion = Tracker(settings).champion(claim.identifier)

    as_seasonal = {"SEASONAL_NAIVE": lambda data, _: (PersistenceForecaster(data.layout), {})}
    TrainingJob(settings, as_seasonal).handle(claim)
    again = evaluator.evaluate(claim.config_hash, claim.identifier)
    assert again is not None and again.winner.model_type == "PERSISTENCE"
    assert [c.model_type for c in again.leaderboard] == ["PERSISTENCE", "SEASONAL_NAIVE"]

    assert Tracker(settings).champion(claim.identifier).version == champion.version
    history = ObjectStore(settings).list(settings.bucket_promotion, f"{claim.identifier}/history/")
    assert len(history) == 1
    assert len(read_topic(settings, settings.topic_model_selected, 2, ModelSelected.from_bytes)) == 1
    assert evaluator.evaluate(claim.config_hash, claim.identifier) is None


def test_a_late_run_of_an_older_lineage_does_not_take_the_champion_back(settings, read_topic):
    """Upload order, not decision order: the older lineage is decided, the newer one keeps the alias."""
    store = ObjectStore(settings)
    identifier = f"it-order-{uuid.uuid4().hex[:6]}"
    older = _upload(store, settings, seed=31, identifier=identifier)
    newer = _upload(store, settings, seed=32, identifier=identifier)
    preprocessor = Preprocessor(settings, PipelineConfig())
    for upload in (newer, older):
        preprocessor.handle(upload)
    claims = {c.dataset_id: c for c in read_topic(settings, settings.topic_training_data, 2, TrainingData.from_bytes)}
    evaluator, job, tracker = (
        _evaluator(settings, ["PERSISTENCE"]),
        TrainingJob(settings, PERSISTENCE),
        Tracker(settings),
    )

    job.handle(claims[newer.dataset_id])
    assert evaluator.evaluate(claims[newer.dataset_id].config_hash, identifier).winner is not None
    champion = tracker.champion(identifier)
    late = claims[older.dataset_id]
    job.handle(late)
    decision = evaluator.evaluate(late.config_hash, identifier)

    assert decision is not None and decision.winner is not None
    assert tracker.champion(identifier).version == champion.version
    recorded = store.get_json(evaluator.decision_uri(identifier, late.config_hash))
    assert recorded["outcome"] == "superseded"
    assert recorded["champion_config_hash"] == claims[newer.dataset_id].config_hash
    assert len(read_topic(settings, settings.topic_model_selected, 2, ModelSelected.from_bytes)) == 1
    assert evaluator.evaluate(late.config_hash, identifier) is None, "a decided lineage is not decided again"


def test_a_lineage_without_a_winner_is_decided_once_not_every_sweep(settings, claim):
    def broken(data, _):
        raise FloatingPointError("loss is NaN")

    TrainingJob(settings, {"GRU": broken}).handle(claim)
    evaluator = _evaluator(settings, ["GRU"])
    first = evaluator.evaluate(claim.config_hash, claim.identifier)
    assert first is not None and first.ready and first.winner is None
    recorded = ObjectStore(settings).get_json(evaluator.decision_uri(claim.identifier, claim.config_hash))
    assert recorded["outcome"] == "no_winner"
    assert evaluator.evaluate(claim.config_hash, claim.identifier) is None


def test_a_run_whose_trainer_died_is_closed_as_killed_and_does_not_hold_up_the_decision(settings, claim):
    """A trainer SIGKILLed mid-training leaves its run RUNNING; without heartbeats eval closes it."""
    tracker = Tracker(settings)
    orphan = tracker.start_run(claim.config_hash, "GRU", claim.identifier, claim.dataset_id)
    alive = tracker.start_run(claim.config_hash, "LSTM", claim.identifier, claim.dataset_id)
    evaluator = _evaluator(settings, ["GRU", "LSTM"])
    # Generous against a busy machine: the search between the beat and the check must not outlast it.
    evaluator.config = evaluator.config.model_copy(update={"orphan_after_seconds": 10.0})
    time.sleep(11)
    tracker.heartbeat(alive)

    decision = evaluator.evaluate(claim.config_hash, claim.identifier)

    assert tracker.run_summary(orphan).status == "KILLED"
    assert "no trainer heartbeat" in (tracker.run_summary(orphan).error or "")
    assert tracker.run_summary(alive).status == "RUNNING", "a beating run is left alone"
    assert decision is not None and decision.reason == "waiting for LSTM"


def test_an_s3_outage_during_training_is_waited_out_not_dead_lettered(settings, claim, stack_config, read_topic):
    """MinIO stopped before the trainer reads the claim's data, started again 20 s later: trained, once."""
    run = uuid.uuid4().hex[:8]
    update = {"handler_backoff_seconds": 0.5, "consumer_group": f"it-{run}", "topic_dead_letter": f"it-dlq-{run}"}
    settings = settings.model_copy(update=update)
    ensure_topics(settings, partitions=1)
    MessageProducer(settings).publish(settings.topic_training_data, claim)
    loop = ConsumerLoop(settings, settings.topic_training_data, TrainingData, TrainingJob(settings, PERSISTENCE).handle)
    manager.stop_part(stack_config, "minio")
    try:
        worker = threading.Thread(target=loop.run, kwargs={"max_messages": 1}, daemon=True)
        worker.start()
        time.sleep(20)
    finally:
        manager.up(stack_config, Console(stderr=True))
    worker.join(timeout=180)

    assert not worker.is_alive(), "the handler did not finish after the outage"
    runs = Tracker(settings).lineage_runs(claim.config_hash, "PERSISTENCE")
    assert [r.status for r in runs] == ["FINISHED"]
    assert read_topic(settings, settings.topic_dead_letter, 1, lambda raw: raw) == [], "an outage was dead-lettered"
