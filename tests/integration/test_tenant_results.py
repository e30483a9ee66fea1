"""Tenants read back their own results through the gateway, on the real stack (Kafka, MinIO): `GET /score/{claim_id}`
and `GET /forecasts`, with auth on and two tenants whose identifiers share a partition of the forecasts topic.

The gateway is `create_app` served by uvicorn on a port of its own (real HTTP, so an event stream arrives as it is
sent); an inference replica's batch scorer and stream forecaster run on threads with each tenant's champion (the
persistence model) installed, on fresh topics.
"""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from tenant_keys import auth_fields

from flts.auth import new_key
from flts.kafka import MessageProducer, ensure_topics
from flts.messages import Forecast
from flts.settings import GatewaySettings, InferenceSettings
from flts.storage import ObjectStore
from gateway_container.forecast_feed import forecast_partition
from gateway_container.service import create_app
from inference_container.champions import Champions
from inference_container.scoring import score_claims
from inference_container.streaming import stream_forecasts

pytestmark = pytest.mark.integration

ADMIN, KEY_A, KEY_B = new_key(), new_key(), new_key()
PARTITIONS = 3


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


A, B = bearer(KEY_A), bearer(KEY_B)


def _sharing_a_partition() -> tuple[str, str]:
    """Two fresh identifiers whose forecasts land on one partition: only the gateway's filter keeps them apart."""
    run = uuid.uuid4().hex[:6]
    a = f"cell-a-{run}"
    candidates = (f"cell-b-{run}-{n}" for n in range(100))
    return a, next(b for b in candidates if forecast_partition(b, PARTITIONS) == forecast_partition(a, PARTITIONS))


CELL_A, CELL_B = _sharing_a_partition()


@pytest.fixture(scope="module")
def settings(stack_env) -> InferenceSettings:
    """Fresh topics (forecasts with PARTITIONS partitions, the rest one) and a fresh group prefix."""
    suffix = uuid.uuid4().hex[:8]
    topics = {
        name: f"{field.default}-{suffix}"
        for name, field in InferenceSettings.model_fields.items()
        if name.startswith("topic_")
    }
    fields = {key.lower(): value for key, value in stack_env.items()}
    fresh = InferenceSettings(
        **{**fields, **topics},
        consumer_group=f"test-results-{suffix}",
        handler_backoff_seconds=0.1,
        scoring_wait_seconds=0,
    )
    admin = AdminClient({"bootstrap.servers": fresh.kafka_bootstrap_servers})
    (created,) = admin.create_topics(
        [NewTopic(fresh.topic_forecasts, num_partitions=PARTITIONS, replication_factor=1)]
    ).values()
    created.result(timeout=30)
    ensure_topics(fresh, partitions=1)
    return fresh


@pytest.fixture(scope="module")
def replica(settings, persistence_model, processed) -> Iterator[Champions]:
    """An inference replica's scorer and stream forecaster, each tenant's identifier served by persistence."""
    champions, stop = Champions(), threading.Event()
    seed = persistence_model.window_from_processed(processed.test.iloc[:100])
    for identifier in (CELL_A, CELL_B):
        identity = dataclasses.replace(persistence_model.identity, identifier=identifier)
        champions.install(dataclasses.replace(persistence_model, identity=identity), seed)
    workers = [
        threading.Thread(target=score_claims, args=(settings, champions.get, stop), daemon=True),
        threading.Thread(target=stream_forecasts, args=(settings, champions, stop), daemon=True),
    ]
    for worker in workers:
        worker.start()
    yield champions
    stop.set()
    for worker in workers:
        worker.join(30)


@pytest.fixture(scope="module")
def gateway(settings, stack_env, tmp_path_factory) -> Iterator[str]:
    """The gateway on its own port, auth on: tenant A owns CELL_A, tenant B CELL_B."""
    tenants = {"tenant-a": (KEY_A, [CELL_A]), "tenant-b": (KEY_B, [CELL_B])}
    topics = {name: getattr(settings, name) for name in GatewaySettings.model_fields if name.startswith("topic_")}
    fields = {key.lower(): value for key, value in stack_env.items() if key.lower() in GatewaySettings.model_fields}
    app = create_app(
        GatewaySettings(
            **{**fields, **topics},
            **auth_fields(tmp_path_factory.mktemp("auth"), ADMIN, tenants),
            forecast_stream_seconds=60,
        )
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def _rows(raw_data, start: int, count: int) -> list[dict[str, Any]]:
    frame = raw_data[1].iloc[start : start + count]
    return [
        {name: value if name == "time" else None if pd.isna(value) else float(value) for name, value in row.items()}
        for _, row in frame.iterrows()
    ]


# ------------------------------------------------------------------------------------------ scored claims


def test_a_tenant_reads_its_own_scored_claim_and_another_tenants_key_gets_403_and_never_its_rows(
    gateway, settings, raw_data, persistence_model, replica
):
    csv = raw_data[1].head(200).to_csv(index=False).encode()
    posted = httpx.post(
        f"{gateway}/score",
        params={"identifier": CELL_A},
        files={"rows": ("rows.csv", io.BytesIO(csv))},
        headers=A,
        timeout=60,
    )
    assert posted.status_code == 202, posted.text
    claim = posted.json()["claim_id"]
    url = f"{gateway}/score/{claim}"

    deadline = time.monotonic() + 120
    while (answer := httpx.get(url, params={"identifier": CELL_A}, headers=A, timeout=30)).status_code == 202:
        assert answer.json()["status"] == "pending"
        assert time.monotonic() < deadline, "the claim was not scored within 120 s"
        time.sleep(1)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    result = pd.read_parquet(io.BytesIO(answer.content))
    assert len(result) == (200 - persistence_model.rows_needed + 1) * persistence_model.output_seq_len
    assert answer.content == ObjectStore(settings).get_bytes(posted.json()["result_uri"])

    refused = httpx.get(url, params={"identifier": CELL_A}, headers=B, timeout=30)
    assert refused.status_code == 403 and "PAR1" not in refused.text
    not_bs = httpx.get(url, params={"identifier": CELL_B}, headers=B, timeout=30)
    assert not_bs.status_code == 404 and CELL_A not in not_bs.text


# ------------------------------------------------------------------------------------------ live forecasts


def _poll(gateway: str, identifier: str, key: dict[str, str], after: str | None, wait: float) -> httpx.Response:
    params = {"identifier": identifier, "wait": wait, **({"after": after} if after else {})}
    return httpx.get(f"{gateway}/forecasts", params=params, headers=key, timeout=wait + 30)


def _collect(gateway: str, identifier: str, key: dict[str, str], after: str, count: int) -> list[Forecast]:
    """Long polls from ``after`` until ``count`` forecasts came (60 s at most)."""
    found: list[Forecast] = []
    deadline = time.monotonic() + 60
    while len(found) < count and time.monotonic() < deadline:
        answer = _poll(gateway, identifier, key, after, wait=10)
        assert answer.status_code == 200, answer.text
        found += [Forecast.model_validate(f) for f in answer.json()["forecasts"]]
        after = answer.json()["cursor"]
    return found


class EventStream(threading.Thread):
    """`GET /forecasts` as an EventSource reads it: the data of each event, until ``count`` came or 60 s passed."""

    def __init__(self, gateway: str, identifier: str, key: dict[str, str], count: int) -> None:
        super().__init__(daemon=True)
        self.url, self.params, self.key, self.count = f"{gateway}/forecasts", {"identifier": identifier}, key, count
        self.opened = threading.Event()
        self.forecasts: list[Forecast] = []
        self.status = 0

    def run(self) -> None:
        with httpx.stream("GET", self.url, params=self.params, headers=self.key, timeout=60) as response:
            self.status = response.status_code
            for line in response.iter_lines():
                self.opened.set()  # the first event (retry and cursor) came: the feed reads from here on
                if line.startswith("data: ") and line != "data: ":
                    self.forecasts.append(Forecast.model_validate_json(line.removeprefix("data: ")))
                    if len(self.forecasts) >= self.count:
                        return
        self.opened.set()


def test_a_tenant_reads_its_own_live_forecasts_and_another_tenants_key_gets_403_and_never_sees_them(
    gateway, settings, raw_data, replica
):
    a_from = _poll(gateway, CELL_A, A, None, wait=0).json()["cursor"]
    b_from = _poll(gateway, CELL_B, B, None, wait=0).json()["cursor"]
    assert a_from.split(":")[0] == b_from.split(":")[0] == str(forecast_partition(CELL_A, PARTITIONS))
    stream = EventStream(gateway, CELL_A, A, count=5)
    stream.start()
    assert stream.opened.wait(30), "the event stream did not open"

    rows = _rows(raw_data, 100, 5)
    for identifier, key in ((CELL_A, A), (CELL_B, B)):
        sent = httpx.post(
            f"{gateway}/measurements", params={"identifier": identifier}, json={"rows": rows}, headers=key, timeout=60
        )
        assert sent.status_code == 202, sent.text

    expected = [pd.Timestamp(row["time"]).tz_localize(UTC) for row in rows]
    a_forecasts = _collect(gateway, CELL_A, A, a_from, 5)
    assert [(f.identifier, f.last_observed) for f in a_forecasts] == [(CELL_A, ts) for ts in expected]
    b_forecasts = _collect(gateway, CELL_B, B, b_from, 5)
    assert [(f.identifier, f.last_observed) for f in b_forecasts] == [(CELL_B, ts) for ts in expected]
    stream.join(60)
    assert stream.status == 200 and [f.event_id for f in stream.forecasts] == [f.event_id for f in a_forecasts]

    # Tenant B, with A's identifier: refused before a message is read, as a poll and as a stream.
    assert _poll(gateway, CELL_A, B, a_from, wait=0).status_code == 403
    assert httpx.get(f"{gateway}/forecasts", params={"identifier": CELL_A}, headers=B, timeout=30).status_code == 403
    # B's own forecasts, read from the very partition A's are on, hold none of A's.
    assert {f.identifier for f in _collect(gateway, CELL_B, B, a_from, 5)} == {CELL_B}


def test_the_gateway_reads_the_partition_the_producer_puts_each_identifier_on(settings):
    """forecast_partition is librdkafka's default partitioner (consistent_random: CRC32 of the key), which the
    stream forecaster's producer uses: checked on the broker for 40 keys over 3 and 7 partitions."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    suffix = uuid.uuid4().hex[:8]
    topics = {count: f"partitions-{count}-{suffix}" for count in (3, 7)}
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=1) for n, t in topics.items()]
    ).values():
        future.result(timeout=30)
    keys = [f"cell-{n}-{suffix}" for n in range(40)]
    producer = MessageProducer(settings)
    for topic in topics.values():
        for key in keys:
            producer.send(topic, key, json.dumps({"key": key}).encode(), None)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": f"test-{suffix}"})
    try:
        for count, topic in topics.items():
            consumer.assign([TopicPartition(topic, p, 0) for p in range(count)])
            placed: dict[str, int] = {}
            deadline = time.monotonic() + 30
            while len(placed) < len(keys) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    placed[msg.key().decode()] = msg.partition()
            assert placed == {key: forecast_partition(key, count) for key in keys}
    finally:
        consumer.close()
