"""Live forecasts on the real broker: measurements in, forecasts out, per identifier and champion."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import REGISTRY
from rich.console import Console
from serving_models import BUNDLES, ConsumedMeasurement

from flts.kafka import MessageProducer, ensure_topics
from flts.messages import DeadLetter, Forecast, Measurement
from flts.settings import InferenceSettings
from flts.stack import manager
from flts.tracking import TAG_CONFIG_HASH, TAG_MODEL_TYPE, Tracker
from inference_container.champions import ChampionLoader, Champions
from inference_container.streaming import StreamForecaster, stream_forecasts

pytestmark = pytest.mark.integration


def _as(model, identifier: str, version: str):
    return dataclasses.replace(
        model, identity=dataclasses.replace(model.identity, identifier=identifier, model_version=version)
    )


def _rows(raw_data, identifier: str, start: int, count: int) -> list[Measurement]:
    frame = raw_data[1].iloc[start : start + count]
    columns = [name for name in frame.columns if name != "time"]
    return [
        Measurement(
            identifier=identifier,
            ts=pd.Timestamp(row["time"]).tz_localize(UTC),
            values={name: float(row[name]) for name in columns},
        )
        for _, row in frame.iterrows()
    ]


@pytest.fixture
def streaming(inference_settings):
    """The stream forecaster of an inference replica, on its own thread, stopped after the test."""
    champions, stop = Champions(), threading.Event()
    worker = threading.Thread(target=stream_forecasts, args=(inference_settings, champions, stop), daemon=True)
    worker.start()
    yield champions
    stop.set()
    worker.join(30)


def test_rows_in_forecasts_out_per_champion_and_a_promotion_switches_on_the_next_row(
    inference_settings, streaming, gru_model, persistence_model, processed, raw_data, read_topic
):
    settings, champions = inference_settings, streaming
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    seed = gru_model.window_from_processed(processed.test.iloc[:100])
    champions.install(_as(gru_model, a, "1"), seed)
    champions.install(_as(persistence_model, b, "2"), seed)
    producer = MessageProducer(settings)
    rows = _rows(raw_data, a, 100, 5) + _rows(raw_data, b, 100, 5)
    producer.publish_many(settings.topic_measurements, rows)
    producer.send(settings.topic_measurements, a, b"not a measurement", {})
    unknown = _rows(raw_data, a, 105, 1)[0]
    producer.publish(settings.topic_measurements, unknown.model_copy(update={"values": {"temperature": 3.0}}))

    forecasts = read_topic(settings, settings.topic_forecasts, 10, Forecast.from_bytes)
    assert len(forecasts) == 10
    by_identifier = {a: [f for f in forecasts if f.identifier == a], b: [f for f in forecasts if f.identifier == b]}
    assert {f.model_version for f in by_identifier[a]} == {"1"}
    assert {f.model_version for f in by_identifier[b]} == {"2"}
    for identifier, sent in ((a, rows[:5]), (b, rows[5:])):
        assert [f.last_observed for f in by_identifier[identifier]] == [r.ts for r in sent]
        first = by_identifier[identifier][0]
        assert len(first.ts) == gru_model.output_seq_len and set(first.values) == set(gru_model.target_columns)
    assert champions.latest(a).last_ns == pd.Timestamp(rows[4].ts).value  # what /predict without rows uses

    champions.install(_as(persistence_model, a, "3"))
    producer.publish_many(settings.topic_measurements, _rows(raw_data, a, 106, 1))
    forecasts = read_topic(settings, settings.topic_forecasts, 11, Forecast.from_bytes)
    assert [f.model_version for f in forecasts if f.identifier == a][-1] == "3"

    letters = read_topic(settings, settings.topic_dead_letter, 2, DeadLetter.model_validate_json)
    unknown_column, not_a_message = sorted((letter.reason for letter in letters), key=lambda r: "Invalid JSON" in r)
    assert "not read by the champion" in unknown_column and "temperature" in unknown_column
    assert "Invalid JSON" in not_a_message


class _Kept:
    """What a transactional producer would publish, kept in memory: the reference run's forecasts."""

    def __init__(self) -> None:
        self.events: list[Forecast] = []

    def begin(self) -> None:
        pass

    def publish_many(self, topic, events) -> None:
        self.events.extend(events)

    def commit(self, consumer, messages) -> None:
        pass


@pytest.mark.parametrize("successor", ["same transactional id", "new transactional id"])
def test_a_forecaster_killed_mid_stream_and_restarted_loses_and_duplicates_no_forecast(
    inference_settings, gru_bundle, gru_model, raw_data, read_topic, stack_env, tmp_path, successor
):
    """kill -9 of a replica mid-stream; its successor rebuilds the windows from the rows before the committed
    offsets and goes on: each row gets exactly one forecast, the one an uninterrupted replica makes. The successor
    is the same slot coming back (it aborts the dead one's open transaction at once), or a replica under another
    transactional id (a pod with a new name: the broker aborts the dead one's transaction after its timeout, and
    the partition's offsets wait for that)."""
    settings = inference_settings
    identifiers = [f"k{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    per_identifier = 400
    rows = [row for start in range(0, per_identifier, 10) for i in identifiers for row in _rows(raw_data, i, start, 10)]
    env = {
        **os.environ,
        **stack_env,
        **{name.upper(): str(getattr(settings, name)) for name in InferenceSettings.model_fields if "topic" in name},
        "CONSUMER_GROUP": settings.consumer_group,
    }
    worker = str(Path(__file__).with_name("stream_worker.py"))
    command = [sys.executable, worker, str(gru_bundle), ",".join(identifiers)]
    log = (tmp_path / "worker.log").open("w")
    producer = MessageProducer(settings)

    def publish(chunk: list[Measurement]) -> None:
        producer.publish_many(settings.topic_measurements, chunk)

    first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        half = len(rows) // 2
        for start in range(0, half, 20):  # paced: many small transactions, so the kill lands mid-stream
            publish(rows[start : start + 20])
            time.sleep(0.05)
        assert read_topic(settings, settings.topic_forecasts, 50, Forecast.from_bytes, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        if successor == "new transactional id":
            env = {**env, "HTTP_PORT": str(settings.http_port + 1)}  # part of the id: <group>@<host>:<port>
        second = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for start in range(half, len(rows), 20):
                publish(rows[start : start + 20])
                time.sleep(0.05)
            reference = StreamForecaster(settings, _champions_serving(gru_model, identifiers), producer=_Kept())
            reference.handle_batch([ConsumedMeasurement(row) for row in rows], consumer=None)
            expected = {(f.identifier, f.last_observed): f.values for f in reference.producer.events}
            read_topic(settings, settings.topic_forecasts, len(expected), Forecast.from_bytes, timeout=90)
            got = read_topic(settings, settings.topic_forecasts, len(expected) + 1, Forecast.from_bytes, timeout=5)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    keys = [(f.identifier, f.last_observed) for f in got]
    assert len(keys) == len(set(keys)), "a forecast was published twice"
    assert set(keys) == set(expected), (tmp_path / "worker.log").read_text()[-3000:]
    for forecast in got:
        made = expected[(forecast.identifier, forecast.last_observed)]
        for column, values in forecast.values.items():
            assert values == pytest.approx(made[column], rel=1e-4, abs=1e-6)


def _champions_serving(model, identifiers: list[str]) -> Champions:
    champions = Champions()
    for identifier in identifiers:
        champions.install(_as(model, identifier, "1"))
    return champions


def _forecasts_of(settings, rows: list[Measurement], model) -> dict:
    """What one uninterrupted replica serving `model` for every identifier publishes for `rows`, by
    (identifier, last observed)."""
    reference = StreamForecaster(
        settings, _champions_serving(model, sorted({r.identifier for r in rows})), producer=_Kept()
    )
    reference.handle_batch([ConsumedMeasurement(row) for row in rows], consumer=None)
    return {(f.identifier, f.last_observed): f.values for f in reference.producer.events}


def _assert_each_row_forecast_once_as_expected(got: list[Forecast], expected: dict) -> None:
    """Exactly once: no forecast twice, none missing, each the one an uninterrupted replica makes."""
    keys = [(f.identifier, f.last_observed) for f in got]
    assert len(keys) == len(set(keys)), "a forecast was published twice"
    assert set(keys) == set(expected), f"missing: {sorted(set(expected) - set(keys))[:5]}"
    for forecast in got:
        made = expected[(forecast.identifier, forecast.last_observed)]
        for column, values in forecast.values.items():
            assert values == pytest.approx(made[column], rel=1e-4, abs=1e-6)


def _on_demand_loads() -> float:
    return REGISTRY.get_sample_value("flts_champion_loads_total", {"outcome": "on_demand"}) or 0.0


def _failed_loads() -> float:
    return REGISTRY.get_sample_value("flts_champion_loads_total", {"outcome": "failed"}) or 0.0


@pytest.mark.faults
def test_a_replica_owning_more_series_than_its_cache_loses_no_row_while_object_storage_is_down(
    inference_settings, persistence_model, raw_data, read_topic, stack_config, monkeypatch
):
    """Four series, a cache of one, champions in the real registry. Two series stream from the start; MinIO
    stops for 20 s; the other two start streaming during the outage, so their champions cannot be downloaded.
    Every row still gets exactly one forecast, the one an uninterrupted replica makes, and each series' champion is
    downloaded once (the stream holds its partition's series whatever `max_loaded_champions`)."""
    # A download fails at once (MLflow's client would otherwise retry it with backoff for minutes, until it worked).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    suffix = uuid.uuid4().hex[:8]
    settings = inference_settings.model_copy(
        update={"mlflow_experiment": f"it-stream-{suffix}", "registered_model_prefix": f"it{suffix}"}
    )
    tracker = Tracker(settings)
    run_id = tracker.start_run("c" * 64, "PERSISTENCE", "any", "dataset")
    tracker.log_model(run_id, BUNDLES[persistence_model.identity.run_id])
    early, late = [f"e{i}-{suffix}" for i in range(2)], [f"l{i}-{suffix}" for i in range(2)]
    for identifier in early + late:
        version = tracker.register(run_id, identifier, {TAG_CONFIG_HASH: "c" * 64, TAG_MODEL_TYPE: "PERSISTENCE"})
        tracker.set_champion(identifier, version)
    champions, stop = Champions(capacity=1), threading.Event()
    loader = ChampionLoader(settings, champions)
    loader.reconcile()
    loads_before, failed_before = _on_demand_loads(), _failed_loads()
    worker = threading.Thread(target=stream_forecasts, args=(settings, champions, stop, loader.loaded), daemon=True)
    worker.start()

    producer = MessageProducer(settings)
    sent: list[Measurement] = []

    def publish(identifiers: list[str], start: int, count: int) -> None:
        for begin in range(start, start + count, 10):  # interleaved a few rows at a time, as stations report
            chunk = [row for i in identifiers for row in _rows(raw_data, i, begin, 10)]
            producer.publish_many(settings.topic_measurements, chunk)
            sent.extend(chunk)

    try:
        publish(early, 0, 40)
        assert read_topic(settings, settings.topic_forecasts, 1, Forecast.from_bytes, timeout=60)
        manager.stop_part(stack_config, "minio")
        try:
            publish(early, 40, 40)
            publish(late, 0, 40)
            time.sleep(20)
        finally:
            manager.up(stack_config, Console(stderr=True))
        publish(early, 80, 20)
        publish(late, 40, 20)
        expected = _forecasts_of(settings, sent, persistence_model)
        read_topic(settings, settings.topic_forecasts, len(expected), Forecast.from_bytes, timeout=180)
        got = read_topic(settings, settings.topic_forecasts, len(expected) + 1, Forecast.from_bytes, timeout=5)
    finally:
        stop.set()
        worker.join(60)
    _assert_each_row_forecast_once_as_expected(got, expected)
    assert _on_demand_loads() - loads_before == 3, "a champion of an owned series was downloaded more than once"
    assert _failed_loads() > failed_before, "no download failed during the outage: the test proved nothing"


def test_a_replica_joining_mid_stream_takes_partitions_without_a_row_lost_or_forecast_twice(
    inference_settings, gru_model, raw_data, read_topic
):
    """A second replica joins while the first is forecasting (the autoscaler adding a pod): the group rebalances
    mid-batch, partitions move, their new owner rebuilds their windows from the committed offsets. Every row still
    gets exactly one forecast, the one a single uninterrupted replica makes."""
    settings = inference_settings.model_copy(update={"topic_measurements": f"measurements-{uuid.uuid4().hex[:8]}"})
    ensure_topics(settings, partitions=4)
    identifiers = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    rows = [row for start in range(0, 300, 10) for i in identifiers for row in _rows(raw_data, i, start, 10)]
    replicas = []

    def start_replica(port: int) -> None:
        stop = threading.Event()
        replica_settings = settings.model_copy(update={"http_port": port})  # its own transactional id
        worker = threading.Thread(
            target=stream_forecasts,
            args=(replica_settings, _champions_serving(gru_model, identifiers), stop),
            daemon=True,
        )
        worker.start()
        replicas.append((stop, worker))

    producer = MessageProducer(settings)
    try:
        start_replica(settings.http_port)
        half = len(rows) // 2
        for begin in range(0, len(rows), 30):
            if begin >= half and len(replicas) == 1:
                start_replica(settings.http_port + 1)
            producer.publish_many(settings.topic_measurements, rows[begin : begin + 30])
            time.sleep(0.1)  # paced: the join lands while batches are in flight
        expected = _forecasts_of(settings, rows, gru_model)
        read_topic(settings, settings.topic_forecasts, len(expected), Forecast.from_bytes, timeout=180)
        got = read_topic(settings, settings.topic_forecasts, len(expected) + 1, Forecast.from_bytes, timeout=5)
    finally:
        for stop, worker in replicas:
            stop.set()
            worker.join(60)
    _assert_each_row_forecast_once_as_expected(got, expected)
