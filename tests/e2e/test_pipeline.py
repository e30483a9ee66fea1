"""End to end on the real local stack: every service a process, a generated dataset through the gateway.

Bounded: a small dataset and a small model config, so the whole module runs in a few minutes.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import httpx
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console

from flts.client import window_request
from flts.config import PipelineConfig
from flts.data.generate import write_dataset
from flts.messages import Forecast
from flts.settings import CommonSettings
from flts.stack import manager
from flts.storage import ObjectStore
from flts.tracking import Tracker

pytestmark = pytest.mark.e2e

# Every family the default config trains: two networks, LightGBM, two statistical models and the baselines.
EXPECTED = set(PipelineConfig().evaluation.expected_model_types)
SERVABLE = EXPECTED - {"SEASONAL_NAIVE"}


def _history(settings: CommonSettings, identifier: str) -> list[dict]:
    return ObjectStore(settings).list(settings.bucket_promotion, f"{identifier}/history/")


def test_upload_to_served_champion(first_run, settings, client, dataset):
    status = first_run["status"]
    finished = {r["model_type"] for r in status["training"] if r["status"] == "FINISHED"}
    assert finished == EXPECTED
    assert {c["model_type"] for c in status["leaderboard"]} == EXPECTED
    # Every target column chosen on validation among the servable models, persistence the unit of comparison.
    targets = status["preprocessed"]["target_columns"]
    assert sorted(status["decision"]["column_winners"]) == sorted(targets)
    assert set(status["decision"]["column_winners"].values()) <= SERVABLE
    assert sum(len(c["column_wins"]) for c in status["leaderboard"]) == len(targets)
    persistence = next(c for c in status["leaderboard"] if c["model_type"] == "PERSISTENCE")
    assert persistence["rmse_vs_persistence"] == dict.fromkeys(targets, 1.0)
    champion = status["champion"]
    tracker = Tracker(settings)
    alias = tracker.champion("global")
    assert alias is not None and str(alias.version) == champion["model_version"]
    assert alias.run_id == champion["run_id"]
    # Interim champions served while the networks trained are in the history too, before the one final promotion.
    store = ObjectStore(settings)
    history = [store.get_json(f"s3://{settings.bucket_promotion}/{o['Key']}") for o in _history(settings, "global")]
    assert [h["model_version"] for h in history if not h.get("interim")] == [champion["model_version"]]
    assert max(history, key=lambda h: h["decided_at_ms"])["model_version"] == champion["model_version"]

    forecast = client.predict(window_request(pd.read_csv(dataset[1]), 10))
    assert forecast["model_version"] == champion["model_version"]
    assert forecast["run_id"] == champion["run_id"]
    assert len(forecast["predictions"]) == 1

    # Why this champion: eval's record as /model-info shows it; the ranked models that cannot be served say why.
    # (A replica that installed the champion before eval wrote its record reads it at the next reconcile; when the
    # final champion is the interim one, the replica shows the interim record, marked so, until then.)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        selection = client.model_info(missing_ok=False)["selection"]
        if selection is not None and not selection.get("interim"):
            break
        time.sleep(2)
    assert selection == {"reason": champion["reason"], "leaderboard": champion["leaderboard"]}
    unservable = {c["model_type"] for c in selection["leaderboard"] if not c["servable"]}
    assert unservable == EXPECTED - SERVABLE
    assert all(c["not_servable_because"] for c in selection["leaderboard"] if not c["servable"])


def test_the_lineage_is_scored_once_into_inference_logs_and_new_rows_come_back_as_forecasts(
    first_run, client, dataset, settings, read_topic
):
    store = ObjectStore(settings)
    config_hash = first_run["upload"]["config_hash"]
    # The upload that processed the lineage (a kept test stack has seen this dataset before) names the claim.
    dataset_id = store.get_json(f"s3://{settings.bucket_processed}/global/{config_hash}/metadata.json")["dataset_id"]
    deadline = time.monotonic() + 120
    while not (results := [o for o in store.list(settings.bucket_inference_logs, "global/") if dataset_id in o["Key"]]):
        assert time.monotonic() < deadline, "preprocess's claim of the test split was not scored"
        time.sleep(2)
    assert [o["Key"].rsplit("/", 1)[1] for o in results] == [f"{dataset_id}-test.parquet"]
    scored = pd.read_parquet(io.BytesIO(store.get_bytes(f"s3://{settings.bucket_inference_logs}/{results[0]['Key']}")))
    assert set(scored["model_version"].astype(str)) == {first_run["status"]["champion"]["model_version"]}

    test = pd.read_csv(dataset[1])
    last = pd.Timestamp(test["time"].iloc[-1], tz="UTC")
    cells = {name: None if pd.isna(value) else value for name, value in test.iloc[-1].items()}
    row = {**cells, "time": (last + pd.Timedelta("2min")).isoformat()}
    response = httpx.post(f"{client.gateway_url}/measurements", json={"rows": [row]}, timeout=30)
    assert response.status_code == 202, response.text
    forecasts = read_topic(settings, settings.topic_forecasts, 1, Forecast.from_bytes)
    assert [(f.identifier, f.last_observed) for f in forecasts] == [("global", last + pd.Timedelta("2min"))]


def test_the_same_dataset_again_does_not_retrain(first_run, client, dataset, settings):
    tracker = Tracker(settings)
    config_hash = first_run["upload"]["config_hash"]
    runs_before = {r.run_id for r in tracker.lineage_runs(config_hash)}
    promotions_before = len(_history(settings, "global"))
    again = client.upload(*dataset)
    assert again["config_hash"] == config_hash
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        assert {r.run_id for r in tracker.lineage_runs(config_hash)} == runs_before
        time.sleep(1)
    assert len(_history(settings, "global")) == promotions_before


def _consume_all_training_events(settings: CommonSettings) -> None:
    """Move eval's committed offsets to the end: as if it had consumed the events and then died."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    deadline = time.monotonic() + 60
    while admin.describe_consumer_groups(["flts-eval"])["flts-eval"].result().members:
        assert time.monotonic() < deadline, "the killed eval never left its consumer group"
        time.sleep(1)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "flts-eval"})
    metadata = consumer.list_topics(settings.topic_model_training, timeout=10)
    partitions = [
        TopicPartition(settings.topic_model_training, p)
        for p in metadata.topics[settings.topic_model_training].partitions
    ]
    ends = [
        TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=10)[1]) for tp in partitions
    ]
    try:
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def test_eval_killed_after_the_training_events_were_consumed_still_promotes(
    first_run, services, client, settings, tmp_path
):
    console = Console(stderr=True)
    manager.kill_part(services, "eval")
    train, test = write_dataset(tmp_path, train_rows=3_000, test_rows=600, seed=6)
    upload = client.upload(train, test, identifier="cell-2")
    tracker = Tracker(settings)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = tracker.lineage_runs(upload["config_hash"])
        if {r.model_type for r in runs if r.status == "FINISHED"} == EXPECTED:
            break
        time.sleep(2)
    else:
        pytest.fail(f"training did not finish: {[(r.model_type, r.status) for r in runs]}")
    time.sleep(3)
    _consume_all_training_events(settings)
    manager.up(services, console, services=True)
    status = client.wait_for_champion(upload["config_hash"], identifier="cell-2", timeout=120)
    assert status.champion.identifier == "cell-2"
    assert tracker.champion("cell-2") is not None
    assert tracker.champion("global").run_id == first_run["status"]["champion"]["run_id"]


def test_the_same_file_uploaded_for_two_identifiers_gives_each_its_own_champion(first_run, client, dataset, settings):
    """The identifier is part of the lineage: neither tenant finds, announces or serves the other's runs."""
    uploads = [client.upload(*dataset, identifier=name) for name in ("tenant-a", "tenant-b")]
    assert len({u["config_hash"] for u in uploads} | {first_run["upload"]["config_hash"]}) == 3
    tracker = Tracker(settings)
    for upload in uploads:
        status = client.wait_for_champion(upload["config_hash"], identifier=upload["identifier"], timeout=400)
        champion = status.champion
        assert champion.identifier == upload["identifier"]
        assert tracker.champion(upload["identifier"]).run_id == champion.run_id
        assert {r.identifier for r in tracker.lineage_runs(upload["config_hash"])} == {upload["identifier"]}
    runs = [{r.run_id for r in tracker.lineage_runs(u["config_hash"])} for u in uploads]
    assert not runs[0] & runs[1], "the two tenants share runs"
    other_tenant = httpx.get(
        f"{client.gateway_url}/runs/{uploads[1]['config_hash']}", params={"identifier": "tenant-a"}, timeout=30
    )
    assert other_tenant.status_code == 404, "tenant-a's view shows nothing of tenant-b's lineage"


def test_uploads_are_listed_per_identifier_a_page_at_a_time(first_run, client, dataset):
    client.upload(*dataset, identifier="tenant-list")
    first = httpx.get(f"{client.gateway_url}/datasets", params={"identifier": "tenant-list", "limit": 1}).json()
    assert [item["key"].split("/")[0] for item in first["items"]] == ["tenant-list"] and first["next"]
    rest = httpx.get(
        f"{client.gateway_url}/datasets", params={"identifier": "tenant-list", "after": first["next"]}
    ).json()
    keys = [item["key"] for item in first["items"] + rest["items"]]
    assert len(keys) == 2 and all(k.startswith("tenant-list/") for k in keys) and rest["next"] is None


def test_the_cli_lists_runs_shows_a_status_the_champion_and_a_forecast(first_run, services, dataset):
    from typer.testing import CliRunner

    from flts.cli import app

    env = {"FLTS_GATEWAY_URL": services.gateway_url, "FLTS_INFERENCE_URL": services.inference_url}
    runner = CliRunner()
    config_hash, champion = first_run["upload"]["config_hash"], first_run["status"]["champion"]

    runs = runner.invoke(app, ["runs"], env=env)
    assert runs.exit_code == 0 and "promoted" in runs.stdout, runs.stdout
    status = runner.invoke(app, ["status", config_hash], env=env)
    assert status.exit_code == 0 and "Leaderboard" in status.stdout and "champion promoted" in status.stdout
    served = runner.invoke(app, ["champion"], env=env)
    assert json.loads(served.stdout)["model_version"] == champion["model_version"]
    forecast = runner.invoke(app, ["predict", "--file", str(dataset[1]), "--steps", "2", "--json"], env=env)
    assert forecast.exit_code == 0, forecast.stdout
    assert len(json.loads(forecast.stdout)["predictions"]) == 2
    unknown = runner.invoke(app, ["status", "f" * 64], env=env)
    assert unknown.exit_code == 1 and "flts runs" in unknown.stdout


@pytest.mark.faults
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_broker_outage_during_training_leaves_every_service_consuming(how, services, client, settings, tmp_path):
    """Issue 9: the broker stopped or killed while the trainers train; only the broker is started again. Then
    the next upload trains and is served, and a live row of the series comes back as a forecast (the stream
    forecaster's transactions survive the restart: librdkafka#5456 once left it blocked for good)."""
    console = Console(stderr=True)
    pids = {part.name: part.pid for part in manager.status(services) if part.name not in manager.parts(services)}
    tracker = Tracker(settings)
    seed = uuid.uuid4().int % 10**6  # new data, so it trains even on a kept test stack (FLTS_TEST_KEEP_STACK)
    identifier = f"outage-{how.lower()}-{seed}"
    during = write_dataset(tmp_path / "during", train_rows=3_000, test_rows=600, seed=seed)
    upload = client.upload(*during, identifier)
    deadline = time.monotonic() + 180
    while not any(r.status == "RUNNING" for r in tracker.lineage_runs(upload["config_hash"], "GRU")):
        assert time.monotonic() < deadline, "GRU training never started"
        time.sleep(0.3)
    if how == "SIGTERM":
        manager.stop_part(services, "kafka")
    else:
        manager.kill_part(services, "kafka")
    time.sleep(25)  # past the services' 10 s session timeout: every consumer is dropped from its group
    manager.up(services, console)
    client.wait_for_champion(upload["config_hash"], identifier=identifier, timeout=300)

    started = time.monotonic()
    after = write_dataset(tmp_path / "after", train_rows=3_000, test_rows=600, seed=seed + 100)
    next_hash = client.upload(*after, f"{identifier}-next")["config_hash"]
    status = client.wait_for_champion(next_hash, f"{identifier}-next", timeout=300)
    print(f"\nRECOVERY e2e {how}: the next upload was served {time.monotonic() - started:.0f}s after it was sent")
    assert {r.model_type for r in status.training if r.status == "FINISHED"} == EXPECTED
    after_pids = {part.name: part.pid for part in manager.status(services) if part.name in pids}
    assert after_pids == pids, "a service was restarted"
    _a_live_row_comes_back_as_a_forecast(client, identifier, pd.read_csv(during[1]))


def _a_live_row_comes_back_as_a_forecast(client, identifier: str, test: pd.DataFrame) -> None:
    """The row after the series' last, on POST /measurements; its forecast read with GET /forecasts (long polls)."""
    feed = f"{client.gateway_url}/forecasts"
    cursor = httpx.get(feed, params={"identifier": identifier, "wait": 0}, timeout=60).json()["cursor"]
    at = pd.Timestamp(test["time"].iloc[-1], tz="UTC") + pd.Timedelta("2min")
    cells = {name: None if pd.isna(value) else value for name, value in test.iloc[-1].items()}
    row = {**cells, "time": at.isoformat()}
    sent = httpx.post(
        f"{client.gateway_url}/measurements", json={"rows": [row]}, params={"identifier": identifier}, timeout=30
    )
    assert sent.status_code == 202, sent.text
    deadline, seen = time.monotonic() + 180, []
    while time.monotonic() < deadline:
        answer = httpx.get(feed, params={"identifier": identifier, "after": cursor, "wait": 20}, timeout=60).json()
        cursor, seen = answer["cursor"], seen + answer["forecasts"]
        if any(pd.Timestamp(f["last_observed"]) == at for f in seen):
            return
    pytest.fail(f"no forecast of the live row at {at} within 180 s after the broker came back: {seen}")
