"""Inference replicas agree with the registry: the real stack's MLflow registry and Kafka, the real app.

The models are tiny persistence baselines logged as real MLflow artifacts; one run is registered
as a version of several identifiers' models, which is all a replica's loader looks at.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from flts.client import window_request
from flts.config import PipelineConfig, RecurrentConfig
from flts.data.generate import generate_lte_dataset
from flts.data.preprocess import ProcessedDataset, preprocess
from flts.data.windows import make_windows
from flts.kafka import MessageProducer, ensure_topics
from flts.layout import PREPROCESSING_FILE, champion_pointer_uri, history_uri, processed_uri, split_file
from flts.messages import ModelSelected
from flts.models.base import WindowLayout
from flts.models.baselines import PersistenceForecaster
from flts.models.recurrent import train_recurrent
from flts.records import Promotion
from flts.settings import InferenceSettings
from flts.storage import ObjectStore
from flts.tracking import TAG_CONFIG_HASH, TAG_MODEL_TYPE, Tracker, registered_model_name
from inference_container.service import create_app

pytestmark = pytest.mark.integration

CONFIG_HASH = "c" * 64
RECONCILE_SECONDS = 3.0
SMALL_GRU = RecurrentConfig(hidden_size=8, num_layers=1, epochs=1)


def _promotion(identifier: str, run_id: str, **fields: Any) -> dict[str, Any]:
    """A champion pointer (or history entry) as eval writes it, with the fields a test sets."""
    record = {
        "config_hash": CONFIG_HASH,
        "identifier": identifier,
        "model_type": "PERSISTENCE",
        "run_id": run_id,
        "registered_model": f"flts-{identifier}",
        "model_version": "1",
        "score": 0.2,
        "reason": "the best model",
        "decided_at": "2026-12-02T04:05:00+00:00",
        "decided_at_ms": 1_796_184_300_000,
    }
    return Promotion.model_validate({**record, **fields}).to_json()


@pytest.fixture(scope="module")
def processed() -> ProcessedDataset:
    """A lineage's data as preprocess leaves it (the splits and the metadata to replay the transform)."""
    train, test = generate_lte_dataset(train_rows=300, test_rows=100, seed=4)
    return preprocess(train, test, PipelineConfig())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, processed) -> Path:
    """A persistence model as the trainers save it: the forecaster and its preprocessing metadata."""
    meta = processed.metadata
    windows = PipelineConfig().windows
    layout = WindowLayout.build(
        meta.feature_columns, meta.target_columns, windows.input_seq_len, windows.output_seq_len
    )
    directory = tmp_path_factory.mktemp("persistence")
    PersistenceForecaster(layout).save(directory)
    (directory / PREPROCESSING_FILE).write_text(json.dumps(meta.to_json()))
    return directory


@pytest.fixture
def settings(fresh_settings) -> InferenceSettings:
    settings = fresh_settings(
        InferenceSettings,
        topic_model_selected="it-selected-{suffix}",
        # The replica's own live stream and scoring claims: the shared topics carry the e2e lineage's rows of
        # `global` when CI runs the e2e tests first, and its stream would advance this test's `global` window.
        topic_measurements="it-measurements-{suffix}",
        topic_forecasts="it-forecasts-{suffix}",
        topic_inference_data="it-inference-data-{suffix}",
        topic_inference_scored="it-inference-scored-{suffix}",
        mlflow_experiment="it-champions-{suffix}",
        registered_model_prefix="it{suffix}",
        consumer_group="it-inference-{suffix}",
        session_timeout_ms=6000,
        auth_enabled=False,  # as the local stack runs it: every caller is the admin
    )
    ensure_topics(settings, partitions=1)
    return settings


class Registry:
    """Runs, versions and aliases as eval and the trainers leave them."""

    def __init__(self, settings: InferenceSettings, model_dir: Path) -> None:
        self.settings, self.model_dir = settings, model_dir
        self.tracker = Tracker(settings)

    def run(self, with_model: bool = True) -> str:
        run_id = self.tracker.start_run(CONFIG_HASH, "PERSISTENCE", "any", "dataset")
        if with_model:
            self.log_model(run_id)
        return run_id

    def log_model(self, run_id: str) -> None:
        self.tracker.log_model(run_id, self.model_dir)

    def promote(self, identifier: str, run_id: str) -> str:
        version = self.tracker.register(run_id, identifier, {TAG_CONFIG_HASH: CONFIG_HASH, TAG_MODEL_TYPE: "X"})
        self.tracker.set_champion(identifier, version)
        return version

    def announce(self, identifier: str, run_id: str, version: str) -> None:
        event = ModelSelected(
            config_hash=CONFIG_HASH,
            identifier=identifier,
            model_type="PERSISTENCE",
            run_id=run_id,
            registered_model=registered_model_name(self.settings, identifier),
            model_version=version,
            score=0.0,
            pointer=f"s3://{self.settings.bucket_promotion}/{identifier}/current.json",
        )
        producer = MessageProducer(self.settings)
        producer.publish(self.settings.topic_model_selected, event)
        producer.close()


@pytest.fixture
def registry(settings, model_dir) -> Registry:
    return Registry(settings, model_dir)


@pytest.fixture
def replica(settings) -> Iterator[TestClient]:
    """The inference app with its loader running (the lifespan), reconciling every few seconds."""
    app = create_app(settings)
    app.state.loader.reconcile_seconds = RECONCILE_SECONDS
    with TestClient(app) as client:
        yield client


def _until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """True once `condition` holds. A reconcile pass runs every few seconds, but on a loaded machine (CI runs this
    beside the e2e stack) a download and load can take tens of seconds: the bound is generous, not a speed claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def _served(client: TestClient, identifier: str) -> str | None:
    response = client.get("/model-info", params={"identifier": identifier})
    return response.json()["model_version"] if response.status_code == 200 else None


def _loads(outcome: str) -> float:
    return REGISTRY.get_sample_value("flts_champion_loads_total", {"outcome": outcome}) or 0.0


def test_a_replica_turns_ready_only_once_every_champion_is_loaded_page_by_page(settings, registry):
    run_id = registry.run()
    identifiers = [f"cell-{n:02d}" for n in range(12)]
    for identifier in identifiers:
        registry.promote(identifier, run_id)
    app = create_app(settings)
    app.state.loader.page_size = 5  # three pages: the paging a registry of more than 100 identifiers needs

    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503, "ready before loading anything"
        assert _until(lambda: client.get("/readyz").status_code == 200), client.get("/readyz").text
        assert client.get("/readyz").json()["models"] == len(identifiers)
        assert sorted(model["identifier"] for model in client.get("/models").json()) == identifiers


def _held() -> float:
    return REGISTRY.get_sample_value("flts_champions_held") or 0.0


def test_a_replica_holds_at_most_max_loaded_champions_and_loads_any_other_on_its_first_request(settings, registry):
    """Memory stays bounded however many identifiers: the least recently used champion is dropped, and a dropped
    or never loaded one is downloaded when it is asked for (a promotion of it is served on that request too)."""
    run_id = registry.run()
    identifiers = [f"cell-{n}" for n in range(4)]
    for identifier in identifiers:
        registry.promote(identifier, run_id)
    limits = PipelineConfig().inference.model_copy(update={"max_loaded_champions": 2})
    rows = window_request(generate_lte_dataset(train_rows=300, test_rows=100, seed=4)[1], 10)
    app = create_app(settings, inference=limits)
    app.state.loader.reconcile_seconds = RECONCILE_SECONDS

    with TestClient(app) as client:
        assert _until(lambda: client.get("/readyz").status_code == 200), client.get("/readyz").text
        assert client.get("/readyz").json()["models"] == 2 and _held() == 2
        listed = {model["identifier"]: model for model in client.get("/models").json()}
        assert sorted(listed) == identifiers, "every champion is listed, held or not"
        not_held = sorted(identifier for identifier, model in listed.items() if not model["loaded"])
        assert len(not_held) == 2 and all(listed[i]["model_version"] == "1" for i in not_held)

        on_demand, dropped = _loads("on_demand"), REGISTRY.get_sample_value("flts_champions_dropped_total") or 0.0
        for identifier in not_held:
            response = client.post("/predict", json={**rows, "identifier": identifier})
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == "1"
        assert _loads("on_demand") == on_demand + 2
        assert (REGISTRY.get_sample_value("flts_champions_dropped_total") or 0.0) == dropped + 2
        assert client.get("/readyz").json()["models"] == 2, "more than max_loaded_champions held"
        held_now = {model["identifier"] for model in client.get("/models").json() if model["loaded"]}
        assert held_now == set(not_held), "the least recently used were not the ones dropped"

        dropped_one = sorted(set(identifiers) - held_now)[0]
        version = registry.promote(dropped_one, registry.run())
        registry.announce(dropped_one, run_id, version)
        assert _until(
            lambda: {m["identifier"]: m for m in client.get("/models").json()}[dropped_one]["model_version"] == version
        ), "a promotion of a champion that is not held was not heard"
        response = client.post("/predict", json={**rows, "identifier": dropped_one})
        assert response.status_code == 200 and response.json()["model_version"] == version, response.text


def test_an_older_event_does_not_replace_a_newer_champion_and_a_missed_one_is_reconciled(registry, replica):
    first = registry.run()
    registry.promote("cell-a", first)
    assert _until(lambda: _served(replica, "cell-a") == "1")
    second = registry.run()
    version = registry.promote("cell-a", second)
    registry.announce("cell-a", second, version)
    assert _until(lambda: _served(replica, "cell-a") == "2")

    stale_before = _loads("stale")
    registry.announce("cell-a", first, "1")  # a replica can hear an older promotion last
    assert _until(lambda: _loads("stale") > stale_before), "the older event was not handled"
    assert _served(replica, "cell-a") == "2", "an older event took the champion back"

    registry.tracker.set_champion("cell-a", "1")  # an operator's rollback: no event at all
    assert _until(lambda: _served(replica, "cell-a") == "1")


def _stale() -> float:
    return REGISTRY.get_sample_value("flts_champions_stale") or 0.0


def test_a_replica_serving_an_older_version_than_the_newest_promotion_counts_it_stale_until_it_swaps(
    settings, registry, replica
):
    """flts_champions_stale (alert FltsStaleChampion): eval's history names a newer promotion than the replica
    serves (here the alias lags behind it, as when a swap failed), and the count clears once the newer one is served."""
    identifier = f"cell-s-{uuid.uuid4().hex[:8]}"  # the promotion bucket is shared: a history of its own
    registry.promote(identifier, registry.run())
    assert _until(lambda: _served(replica, identifier) == "1")
    assert _stale() == 0
    store = ObjectStore(settings)
    newer = registry.run()
    store.put_json(
        history_uri(settings, identifier, datetime.now(UTC), CONFIG_HASH),
        _promotion(identifier, newer, model_version="2"),
    )
    assert _until(lambda: _stale() == 1), "the older champion was not counted stale"
    assert _served(replica, identifier) == "1"
    version = registry.promote(identifier, newer)
    assert version == "2"
    assert _until(lambda: _served(replica, identifier) == "2" and _stale() == 0)


def test_a_forged_model_selected_installs_nothing_the_registry_does_not_name(registry, replica):
    """Anyone who can write to `model-selected` could name any run: an event is only a hint to read the alias, so an
    event naming a version the identifier's registered model lacks, with another identifier's run, changes nothing."""
    own, others = registry.run(), registry.run()
    registry.promote("cell-f", own)
    registry.promote("cell-g", others)
    assert _until(lambda: _served(replica, "cell-f") == "1" and _served(replica, "cell-g") == "1")
    refused_before = _loads("refused")
    registry.announce("cell-f", others, "2")  # newer than the version served, and cell-g's run
    assert _until(lambda: _loads("refused") > refused_before), "the forged event was not handled"
    served = replica.get("/model-info", params={"identifier": "cell-f"}).json()
    assert (served["model_version"], served["run_id"]) == ("1", own), "a forged event was installed"


def test_a_champion_that_failed_to_load_is_installed_once_it_can_be(registry, replica, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the failed download is not retried for minutes
    working = registry.run()
    registry.promote("cell-b", working)
    assert _until(lambda: _served(replica, "cell-b") == "1")
    failed_before = _loads("failed")
    broken = registry.run(with_model=False)  # registered before its artifacts exist: the download fails
    version = registry.promote("cell-b", broken)
    registry.announce("cell-b", broken, version)
    assert _until(lambda: _loads("failed") > failed_before, timeout=300), "the load did not fail"
    assert _served(replica, "cell-b") == "1" and replica.get("/readyz").status_code == 200

    registry.log_model(broken)
    assert _until(lambda: _served(replica, "cell-b") == "2")


def test_a_replica_whose_follower_died_is_unready_and_unhealthy(registry, replica):
    registry.promote("cell-c", registry.run())
    assert _until(lambda: replica.get("/readyz").status_code == 200)
    loader = replica.app.state.loader
    loader.follower.loop.stop()  # the follower ends by itself while the app goes on
    loader.follower.join(timeout=30)

    ready = replica.get("/readyz")
    assert ready.status_code == 503 and "follower is not running" in ready.json()["status"]
    assert replica.get("/healthz").status_code == 503


def test_a_body_without_rows_forecasts_from_the_lineage_s_last_rows_and_model_info_says_why_it_won(
    settings, registry, replica, processed
):
    """What preprocess and eval leave for a promoted lineage (the processed test split, then the champion pointer
    with the leaderboard) is what a replica serves `{}` from and explains the champion with."""
    identifier = "global"  # the champion of a body that names none (this test's own registry prefix)
    store = ObjectStore(settings)
    buffer = io.BytesIO()
    processed.test.to_parquet(buffer, index=False)
    store.put_bytes(processed_uri(settings, identifier, CONFIG_HASH, split_file("test")), buffer.getvalue())
    run_id = registry.run()
    leaderboard = [
        {"model_type": "PROPHET", "run_id": "p", "score": 0.1, "servable": False, "not_servable_because": "no Prophet"},
        {"model_type": "PERSISTENCE", "run_id": run_id, "score": 0.2, "servable": True},
    ]
    reason = "every expected model type finished; PROPHET ranked higher but cannot be served"
    registry.promote(identifier, run_id)
    assert _until(lambda: _served(replica, identifier) == "1")
    assert replica.get("/model-info").json()["selection"] is None  # eval writes its record after the alias

    store.put_json(
        champion_pointer_uri(settings, identifier, CONFIG_HASH),
        _promotion(identifier, run_id, reason=reason, leaderboard=leaderboard),
    )
    explained = {"reason": reason, "leaderboard": leaderboard}
    assert _until(lambda: replica.get("/model-info").json()["selection"] == explained)
    last_row = processed.test[processed.metadata.time_column].iloc[-1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert replica.get("/model-info").json()["latest_row_ts"] == last_row
    for body, steps in (({}, 1), ({"inference_length": 3}, 3)):
        response = replica.post("/predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["last_row_ts"] == last_row
        assert len(response.json()["predictions"]) == steps


def test_each_column_is_served_by_the_model_that_won_it_once_eval_has_said_so(
    settings, registry, replica, processed, tmp_path
):
    """The champion is PERSISTENCE; eval's record says a GRU run of the lineage won the first target column on
    validation: the replica downloads that run too and forecasts that column with it, the rest by persistence.
    Eval first said so in an interim record (persistence served while the GRU trained): the final record for the
    same version replaces it."""
    identifier = "cell-columns"
    meta, windows_config = processed.metadata, PipelineConfig().windows
    layout = WindowLayout.build(
        meta.feature_columns, meta.target_columns, windows_config.input_seq_len, windows_config.output_seq_len
    )
    windows = {
        split: make_windows(frame, meta.time_column, meta.feature_columns, meta.target_columns, layout.input_seq_len, 1)
        for split, frame in (("train", processed.train), ("validation", processed.validation))
    }
    gru, _ = train_recurrent("GRU", windows["train"], windows["validation"], layout, SMALL_GRU, device="cpu")
    gru.save(tmp_path / "gru")
    (tmp_path / "gru" / PREPROCESSING_FILE).write_text(json.dumps(meta.to_json()))
    gru_run = registry.tracker.start_run(CONFIG_HASH, "GRU", "any", "dataset")
    registry.tracker.log_model(gru_run, tmp_path / "gru")
    champion_run = registry.run()
    registry.promote(identifier, champion_run)
    assert _until(lambda: _served(replica, identifier) == "1")
    first, *rest = meta.target_columns
    info = replica.get("/model-info", params={"identifier": identifier}).json()
    assert info["column_models"] == dict.fromkeys(meta.target_columns, "PERSISTENCE")  # no record from eval yet

    # First an interim record (only persistence had finished), then the final one, for the same version.
    ObjectStore(settings).put_json(
        champion_pointer_uri(settings, identifier, CONFIG_HASH),
        _promotion(
            identifier,
            champion_run,
            reason="interim, the best model finished so far (waiting for GRU)",
            interim=True,
            leaderboard=[
                {"model_type": "PERSISTENCE", "run_id": champion_run, "score": 0.2, "column_wins": meta.target_columns}
            ],
        ),
    )

    def selection() -> dict:
        return replica.get("/model-info", params={"identifier": identifier}).json()["selection"] or {}

    assert _until(lambda: selection().get("interim"))
    ObjectStore(settings).put_json(
        champion_pointer_uri(settings, identifier, CONFIG_HASH),
        _promotion(
            identifier,
            champion_run,
            reason="every expected model type finished",
            leaderboard=[
                {"model_type": "PERSISTENCE", "run_id": champion_run, "score": 0.2, "column_wins": rest},
                {"model_type": "GRU", "run_id": gru_run, "score": 0.3, "servable": True, "column_wins": [first]},
                {"model_type": "PROPHET", "run_id": "p", "score": 0.1, "servable": False, "column_wins": []},
            ],
        ),
    )
    expected = {first: "GRU", **dict.fromkeys(rest, "PERSISTENCE")}
    assert _until(
        lambda: replica.get("/model-info", params={"identifier": identifier}).json()["column_models"] == expected
    )
    _, test = generate_lte_dataset(train_rows=300, test_rows=100, seed=4)
    body = {**window_request(test, rows=info["rows_needed"]), "identifier": identifier}
    forecast = replica.post("/predict", json=body)
    assert forecast.status_code == 200, forecast.text
    step = forecast.json()["predictions"][0]
    last = test.iloc[-1]
    for column in rest:  # persistence: the last value, on the original scale
        assert step[column] == pytest.approx(float(last[column]), rel=1e-4, abs=1e-4), column
    assert step[first] != pytest.approx(float(last[first]), rel=1e-4, abs=1e-4), "the GRU did not serve its column"
