"""Service handlers on the real stack: idempotency, a missing object, a failing training, a broker restart."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from integration_support import upload_dataset
from rich.console import Console

from eval_container.service import Evaluator
from flts.backtest import read_test_forecast, select
from flts.config import EvaluationConfig, PipelineConfig
from flts.data.metadata import PreprocessingMetadata
from flts.kafka import ConsumerLoop, MessageProducer, PermanentError, committed_offsets, ensure_topics
from flts.messages import DatasetUploaded, InferenceData, ModelSelected, ModelTraining, TrainingData
from flts.models.baselines import PersistenceForecaster
from flts.settings import EvalSettings, NonmlSettings, PreprocessSettings
from flts.stack import manager
from flts.storage import ObjectStore
from flts.tracking import Tracker
from flts.train import TrainingJob
from preprocess_container.service import Preprocessor

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(fresh_settings) -> PreprocessSettings:
    settings = fresh_settings(
        PreprocessSettings,
        topic_training_data="it-training-{suffix}",
        topic_inference_data="it-inference-{suffix}",
        topic_model_training="it-events-{suffix}",
        topic_model_selected="it-selected-{suffix}",
        mlflow_experiment="it-{suffix}",
    )
    ensure_topics(settings, partitions=1)
    return settings


@pytest.fixture
def claim(settings, read_topic) -> TrainingData:
    store = ObjectStore(settings)
    Preprocessor(settings, PipelineConfig()).handle(upload_dataset(store, settings, seed=21))
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
    upload = upload_dataset(store, settings, seed=21).model_copy(update={"identifier": claim.identifier})
    Preprocessor(settings, PipelineConfig()).handle(upload)
    claims = read_topic(settings, settings.topic_training_data, 2, TrainingData.from_bytes, timeout=120)
    assert [c.config_hash for c in claims] == [claim.config_hash] * 2
    assert {o["Key"]: o["LastModified"] for o in store.list(bucket, key)} == before
    # The test split's scoring claim goes out again too (a publish that failed after the training claim's is not
    # lost), under the same claim id: inference writes its one result once.
    scoring = read_topic(settings, settings.topic_inference_data, 2, InferenceData.from_bytes, timeout=60)
    assert [s.claim_id for s in scoring] == [f"{claim.dataset_id}-test"] * 2


def test_a_missing_object_behind_a_claim_is_a_permanent_failure(settings):
    store = ObjectStore(settings)
    upload = upload_dataset(store, settings, seed=22)
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


def test_a_training_logs_each_epoch_as_it_happens_and_keeps_its_test_forecasts(settings, claim):
    """The page and `flts status` show progress from these metrics; the plot draws the kept forecasts."""
    from mlflow import MlflowClient

    def fit_two_epochs(data, on_epoch):
        for epoch in (1, 2):
            on_epoch(epoch, {"epoch": float(epoch), "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
        return PersistenceForecaster(data.layout), {}

    TrainingJob(settings, {"PERSISTENCE": fit_two_epochs}).handle(claim)
    tracker = Tracker(settings)
    (run,) = tracker.lineage_runs(claim.config_hash, "PERSISTENCE")
    history = MlflowClient(settings.mlflow_tracking_uri).get_metric_history(run.run_id, "elapsed_seconds")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
    assert run.metrics["val_loss"] == 1.0

    kept = read_test_forecast(tracker, run.run_id)
    store = ObjectStore(settings)
    test = pd.read_parquet(io.BytesIO(store.get_bytes(claim.test.uri)))
    scaler = PreprocessingMetadata.parse(store.get_json(claim.metadata.uri), claim.metadata.uri).fitted_scaler
    target = claim.target_columns[0]
    rows = select(kept, target, limit=len(test))
    actual = scaler.inverse(test[claim.target_columns].to_numpy(), claim.target_columns)[:, 0]
    assert rows["actual"].to_numpy() == pytest.approx(actual[-len(rows) :])
    # persistence: each forecast is the value one step before
    assert rows["forecast"].to_numpy()[1:] == pytest.approx(rows["actual"].to_numpy()[:-1])


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
    # The trainer logged validation metrics per column, and eval chose every column from them.
    assert first.column_winners == dict.fromkeys(sorted(claim.target_columns), "PERSISTENCE")
    (record,) = first.leaderboard_records()
    assert record.column_wins == sorted(claim.target_columns)
    assert record.rmse_vs_persistence == dict.fromkeys(claim.target_columns, 1.0)
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


def test_the_first_model_finished_is_served_at_once_and_confirmed_when_the_rest_finish(settings, claim, read_topic):
    """Interim promotion: persistence serves while a network trains; when the network ties it, persistence (the
    simpler model) stays, now as the decided champion, announced again so replicas re-read its record."""
    evaluator = _evaluator(settings, ["PERSISTENCE", "GRU"])
    store = ObjectStore(settings)
    TrainingJob(settings, PERSISTENCE).handle(claim)
    interim = evaluator.evaluate(claim.config_hash, claim.identifier)
    assert interim is not None and not interim.ready and interim.interim.model_type == "PERSISTENCE"
    pointer = store.get_json(evaluator.pointer_uri(claim.identifier, claim.config_hash))
    assert pointer["interim"] is True and pointer["reason"].startswith("interim")
    assert not store.exists(evaluator.decision_uri(claim.identifier, claim.config_hash))
    served = Tracker(settings).champion(claim.identifier)
    assert served is not None and served.run_id == pointer["run_id"]
    assert evaluator.evaluate(claim.config_hash, claim.identifier).interim is not None  # nothing new: no event
    assert _messages_on(settings, settings.topic_model_selected) == 1

    TrainingJob(settings, {"GRU": lambda data, _: (PersistenceForecaster(data.layout), {})}).handle(claim)
    final = evaluator.evaluate(claim.config_hash, claim.identifier)
    assert final is not None and final.ready and final.winner.model_type == "PERSISTENCE"
    pointer = store.get_json(evaluator.pointer_uri(claim.identifier, claim.config_hash))
    assert "interim" not in pointer and [c["model_type"] for c in pointer["leaderboard"]] == ["PERSISTENCE", "GRU"]
    assert store.get_json(evaluator.decision_uri(claim.identifier, claim.config_hash))["outcome"] == "promoted"
    assert Tracker(settings).champion(claim.identifier).version == served.version
    assert _messages_on(settings, settings.topic_model_selected) == 2
    assert evaluator.evaluate(claim.config_hash, claim.identifier) is None


def test_a_promotion_retried_after_its_pointer_was_lost_is_in_the_history_once(settings, claim):
    """The history entry is written before the pointer and the event: a retry after either failed (here: the pointer
    is gone, as if its write had failed) promotes again but writes the same history entry only once."""
    evaluator, store = _evaluator(settings, ["PERSISTENCE"]), ObjectStore(settings)
    TrainingJob(settings, PERSISTENCE).handle(claim)
    assert evaluator.evaluate(claim.config_hash, claim.identifier).winner is not None
    store.delete(evaluator.pointer_uri(claim.identifier, claim.config_hash))
    store.delete(evaluator.decision_uri(claim.identifier, claim.config_hash))

    assert evaluator.evaluate(claim.config_hash, claim.identifier).winner is not None
    assert store.exists(evaluator.pointer_uri(claim.identifier, claim.config_hash))
    assert len(store.list(settings.bucket_promotion, f"{claim.identifier}/history/")) == 1


def test_a_success_event_delivered_three_times_promotes_once(settings, claim, read_topic):
    """A producer retry after a broker outage can publish one run's SUCCESS event again (issue 9 saw three):
    eval makes the duplicates harmless, so the champion moves once and replicas hear of it once."""
    TrainingJob(settings, PERSISTENCE).handle(claim)
    _, success = read_topic(settings, settings.topic_model_training, 2, ModelTraining.from_bytes)
    producer = MessageProducer(settings)
    for _ in range(2):
        producer.publish(settings.topic_model_training, success)
    evaluator = _evaluator(settings, ["PERSISTENCE"])
    group = f"it-eval-{uuid.uuid4().hex[:8]}"
    loop = ConsumerLoop(settings, settings.topic_model_training, ModelTraining, evaluator.handle, group_id=group)

    assert loop.run(max_messages=4) == 4
    events = read_topic(settings, settings.topic_model_training, 4, ModelTraining.from_bytes)
    assert [e.event_id for e in events[1:]] == [success.event_id] * 3
    assert _messages_on(settings, settings.topic_model_selected) == 1
    assert len(ObjectStore(settings).list(settings.bucket_promotion, f"{claim.identifier}/history/")) == 1


def test_a_late_run_of_an_older_lineage_does_not_take_the_champion_back(settings, read_topic):
    """Upload order, not decision order: the older lineage is decided, the newer one keeps the alias."""
    store = ObjectStore(settings)
    identifier = f"it-order-{uuid.uuid4().hex[:6]}"
    older = upload_dataset(store, settings, seed=31, identifier=identifier)
    newer = upload_dataset(store, settings, seed=32, identifier=identifier)
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


def test_a_run_that_finishes_between_the_sweep_s_snapshot_and_the_close_stays_finished(settings, claim):
    """A sweep reads every lineage first and decides them one by one, minutes later on a busy registry: a run that
    looked orphaned in that snapshot but finished meanwhile is not closed as KILLED (nor left off the leaderboard)."""
    tracker = Tracker(settings)
    TrainingJob(settings, PERSISTENCE).handle(claim)
    slow = tracker.start_run(claim.config_hash, "GRU", claim.identifier, claim.dataset_id)
    evaluator = _evaluator(settings, ["PERSISTENCE", "GRU"])
    evaluator.config = evaluator.config.model_copy(update={"orphan_after_seconds": 1.0})
    time.sleep(2)
    snapshot = tracker.lineage_runs(claim.config_hash)  # the GRU run RUNNING, silent for longer than allowed
    tracker.finish_run(slow)

    decision = evaluator.evaluate(claim.config_hash, claim.identifier, snapshot)

    assert tracker.run_summary(slow).status == "FINISHED", "a finished run was closed as KILLED"
    assert decision is not None and "GRU" not in decision.reason


def test_a_re_upload_never_serves_a_worse_model_than_the_final_champion_while_it_trains(settings, read_topic):
    """Lineage A's final champion serves; B (new data for the same identifier) finishes only a model no better than
    A's relative to persistence: it is not promoted as an interim champion, and B's final decision still is."""
    store = ObjectStore(settings)
    identifier = f"it-reupload-{uuid.uuid4().hex[:6]}"
    preprocessor = Preprocessor(settings, PipelineConfig())
    for seed in (41, 42):
        preprocessor.handle(upload_dataset(store, settings, seed=seed, identifier=identifier))
    first, second = read_topic(settings, settings.topic_training_data, 2, TrainingData.from_bytes)
    tracker, job = Tracker(settings), TrainingJob(settings, PERSISTENCE)
    job.handle(first)
    assert _evaluator(settings, ["PERSISTENCE"]).evaluate(first.config_hash, identifier).winner is not None
    final = tracker.champion(identifier)

    job.handle(second)
    evaluator = _evaluator(settings, ["PERSISTENCE", "GRU"])
    waiting = evaluator.evaluate(second.config_hash, identifier)
    assert waiting is not None and not waiting.ready and waiting.interim is not None
    assert tracker.champion(identifier).version == final.version, "an interim model displaced the final champion"
    assert _messages_on(settings, settings.topic_model_selected) == 1

    TrainingJob(settings, {"GRU": lambda data, _: (PersistenceForecaster(data.layout), {})}).handle(second)
    decided = evaluator.evaluate(second.config_hash, identifier)
    assert decided is not None and decided.ready
    assert tracker.champion(identifier).version != final.version, "the new lineage's final decision was not served"


OUTAGE_S = 60


@pytest.mark.faults
@pytest.mark.parametrize("backbone", ["minio", "mlflow"])
def test_a_60s_outage_mid_preprocessing_and_mid_training_is_waited_out_and_both_lineages_complete(
    backbone, settings, stack_config, read_topic
):
    """One lineage is being preprocessed and another trained when MinIO (or the MLflow server) stops for 60 s:
    both are promoted afterwards, nothing is dead-lettered, no run is recorded FAILED."""
    run = uuid.uuid4().hex[:8]
    update = {
        "handler_backoff_seconds": 0.5,
        "consumer_group": f"it-{run}",
        "topic_dataset_uploaded": f"it-uploads-{run}",
        "topic_dead_letter": f"it-dlq-{run}",
    }
    settings = settings.model_copy(update=update)
    ensure_topics(settings, partitions=1)
    store, producer, tracker = ObjectStore(settings), MessageProducer(settings), Tracker(settings)
    training_first = upload_dataset(store, settings, seed=41)
    preprocessing_first = upload_dataset(store, settings, seed=42)
    outage, preprocessing, training = threading.Event(), threading.Event(), threading.Event()
    preprocessor = Preprocessor(settings, PipelineConfig())
    preprocessor.handle(training_first)  # its claim is on the training topic before the loops start

    def preprocess_then_meet_the_outage(upload: DatasetUploaded) -> None:
        preprocessing.set()
        outage.wait(60)
        preprocessor.handle(upload)

    def fit_then_meet_the_outage(data, _):
        training.set()
        outage.wait(60)
        return PersistenceForecaster(data.layout), {}

    loops = [
        ConsumerLoop(settings, settings.topic_dataset_uploaded, DatasetUploaded, preprocess_then_meet_the_outage),
        ConsumerLoop(
            settings,
            settings.topic_training_data,
            TrainingData,
            TrainingJob(settings, {"PERSISTENCE": fit_then_meet_the_outage}).handle,
        ),
    ]
    workers = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    for worker in workers:
        worker.start()
    try:
        producer.publish(settings.topic_dataset_uploaded, preprocessing_first)
        assert preprocessing.wait(60) and training.wait(60), "the handlers never started"
        manager.stop_part(stack_config, backbone)
        outage.set()
        time.sleep(OUTAGE_S)
        manager.up(stack_config, Console(stderr=True))
        back = time.monotonic()
        claims = read_topic(settings, settings.topic_training_data, 2, TrainingData.from_bytes, timeout=120)
        assert len(claims) == 2, "the lineage preprocessed during the outage published no claim"
        deadline = time.monotonic() + 240
        while not all("FINISHED" in {r.status for r in tracker.lineage_runs(c.config_hash)} for c in claims):
            assert time.monotonic() < deadline, "training did not complete after the outage"
            time.sleep(1)
        recovered = time.monotonic() - back
    finally:
        manager.up(stack_config, Console(stderr=True))
        for loop in loops:
            loop.stop()
    print(f"\nOUTAGE {backbone} {OUTAGE_S}s: both lineages trained {recovered:.0f}s after it was back")

    evaluator = _evaluator(settings, ["PERSISTENCE"])
    for claim in claims:
        runs = tracker.lineage_runs(claim.config_hash)
        assert "FAILED" not in {r.status for r in runs}, "a run interrupted by the outage was recorded FAILED"
        assert [r.status for r in runs].count("FINISHED") == 1
        decision = evaluator.evaluate(claim.config_hash, claim.identifier)
        assert decision is not None and decision.winner is not None
        assert tracker.champion(claim.identifier) is not None
    assert read_topic(settings, settings.topic_dead_letter, 1, lambda raw: raw) == [], "an outage was dead-lettered"


def _messages_on(settings: PreprocessSettings, topic: str) -> int:
    """How many messages a one-partition topic holds (its high watermark), without waiting for more."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "it-watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


# docker compose's default stop_grace_period; the chart gives consumers 60 s (terminationGracePeriodSeconds).
STOP_LIMIT_S = 10


def _child_processes(pid: int) -> list[str]:
    """The pids of a process's children (Prophet's CmdStan optimiser runs as one).

    Threads come and go while we look, so a task that vanished between listing and reading counts as none.
    """
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
    return children


def test_sigterm_while_prophet_fits_stops_the_trainer_in_seconds_and_leaves_the_claim_to_the_next_owner(
    settings, claim, tmp_path
):
    """nonml as it runs in a pod: SIGTERM mid-fit; its run is KILLED (not FAILED), its claim not committed."""
    group = f"it-nonml-{uuid.uuid4().hex[:8]}"
    prophet_only = tmp_path / "pipeline.yaml"
    prophet_only.write_text(yaml.safe_dump({"evaluation": {"expected_model_types": ["PROPHET"]}}))
    env = {
        **os.environ,
        "PIPELINE_CONFIG": str(prophet_only),
        "SERVICE_NAME": "nonml",
        "CONSUMER_GROUP": group,
        "METRICS_PORT": "0",
        "TOPIC_TRAINING_DATA": settings.topic_training_data,
        "TOPIC_MODEL_TRAINING": settings.topic_model_training,
        "MLFLOW_EXPERIMENT": settings.mlflow_experiment,
    }
    log = tmp_path / "nonml.log"
    with log.open("wb") as out:
        nonml = subprocess.Popen([sys.executable, "-m", "nonML_container.service"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 180
        while not _child_processes(nonml.pid) and nonml.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _child_processes(nonml.pid), f"Prophet never started fitting:\n{log.read_text()[-3000:]}"
        sent = time.monotonic()
        nonml.send_signal(signal.SIGTERM)
        nonml.wait(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        if nonml.poll() is None:
            nonml.kill()
            nonml.wait()
    print(f"\nSIGTERM mid-Prophet: the trainer exited {stopped_after:.1f}s later")

    assert stopped_after < STOP_LIMIT_S, log.read_text()[-3000:]
    tracker = Tracker(settings)
    (prophet,) = tracker.lineage_runs(claim.config_hash, "PROPHET")
    assert prophet.status == "KILLED" and "SIGTERM" in (prophet.error or "")
    assert tracker.model_version_of_run(claim.identifier, prophet.run_id) is None
    assert committed_offsets(settings, group, settings.topic_training_data, [0]) == {0: 0}, "the claim was committed"
    next_owner = settings.model_copy(update={"consumer_group": group})
    handed_over: list[TrainingData] = []
    ConsumerLoop(next_owner, settings.topic_training_data, TrainingData, handed_over.append).run(max_messages=1)
    assert [c.config_hash for c in handed_over] == [claim.config_hash]


def test_lightgbm_and_the_statistical_models_train_register_and_serve_from_their_bundles(settings, claim, tmp_path):
    """The nonML service's fits for the families beside Prophet, on a real claim: each run finishes with per-column
    validation scores (eval's column choice), and its registered bundle forecasts what the run scored."""
    from flts.models.base import load_forecaster
    from flts.scoring import forecast_metrics
    from flts.train import load_lineage_data
    from nonML_container.service import expected_fits

    families = ["THETA", "AUTOETS", "LIGHTGBM", "AUTOARIMA"]  # fastest first: the first interim champion soonest
    fits = expected_fits(NonmlSettings(), ["GRU", *reversed(families)])
    assert list(fits) == families
    TrainingJob(settings, fits).handle(claim)

    tracker = Tracker(settings)
    data = load_lineage_data(ObjectStore(settings), claim)
    test = data.windows["test"]
    for model_type in families:
        (run,) = tracker.lineage_runs(claim.config_hash, model_type)
        assert run.status == "FINISHED", model_type
        assert tracker.model_version_of_run(claim.identifier, run.run_id) is not None
        assert all(f"validation_rmse__{column}" in run.metrics for column in claim.target_columns)
        bundle = load_forecaster(Path(tracker.download_model(run.run_id, str(tmp_path / model_type))))
        served = forecast_metrics(test.targets, bundle.predict(test.inputs, test.target_times), claim.target_columns)
        assert served["test_rmse"] == pytest.approx(run.metrics["test_rmse"], rel=1e-5), model_type
