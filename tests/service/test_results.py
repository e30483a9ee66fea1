"""A tenant reads back its scored claims (`GET /score/{claim_id}`) and its live forecasts (`GET /forecasts`) through
FastAPI's TestClient, with auth on: an in-memory object store, and a stand-in for the Kafka reader.

The real stack (MinIO, Kafka, a replica scoring and forecasting, two tenants): tests/integration/test_tenant_results.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaException
from fastapi.testclient import TestClient
from serving_models import forecast_event
from tenant_keys import auth_fields

from flts.auth import key_hash, new_key
from flts.messages import Forecast
from flts.settings import GatewaySettings
from flts.storage import ObjectNotFound, StoredObject
from gateway_container import results
from gateway_container.forecast_feed import Cursor, ForecastsUnavailable
from gateway_container.service import create_app

ADMIN, KEY_A, KEY_B = new_key(), new_key(), new_key()
CLAIM = "0123456789abcdef"
SUBMITTED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


A, B = bearer(KEY_A), bearer(KEY_B)


class MemoryStore:
    """The ObjectStore calls of the scoring routes, on a dict of s3:// URIs; every call is recorded."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.calls: list[str] = []

    def put(self, uri: str, data: bytes, at: datetime = SUBMITTED) -> None:
        self.objects[uri] = (data, at)

    def put_stream(self, uri: str, stream: Any, max_bytes: int | None = None) -> StoredObject:
        data = stream.read()
        self.put(uri, data, datetime.now(UTC))
        return StoredObject(uri, "0" * 64, len(data))

    def page(self, bucket: str, prefix: str, limit: int, after: str = "") -> tuple[list[dict[str, Any]], None]:
        self.calls.append(f"page {bucket}/{prefix}")
        keys = sorted(u.removeprefix(f"s3://{bucket}/") for u in self.objects if u.startswith(f"s3://{bucket}/"))
        found = [k for k in keys if k.startswith(prefix)][:limit]
        return [{"Key": k, "LastModified": self.objects[f"s3://{bucket}/{k}"][1]} for k in found], None

    def exists(self, uri: str) -> bool:
        self.calls.append(f"exists {uri}")
        return uri in self.objects

    def iter_chunks(self, uri: str) -> Iterator[bytes]:
        if uri not in self.objects:
            raise ObjectNotFound(uri)
        data = self.objects[uri][0]
        yield from (data[i : i + 4] for i in range(0, len(data), 4))


class Published:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def publish(self, topic: str, message: Any) -> None:
        self.messages.append(message)


def forecast(identifier: str, minute: int) -> Forecast:
    return forecast_event(identifier, datetime(2024, 3, 1, 12, minute, tzinfo=UTC), float(minute))


class FakeFeed:
    """Stands in for ForecastFeed: what `queued` holds for the identifier is read, one batch a read."""

    queued: dict[str, list[list[Forecast]]] = {}
    opened: list[FakeFeed] = []
    fail: Exception | None = None
    read_fails: Exception | None = None

    def __init__(self, settings: GatewaySettings, identifier: str, after: Cursor | None = None) -> None:
        if FakeFeed.fail is not None:
            raise FakeFeed.fail
        self.identifier, self.after, self.closed = identifier, after, False
        self.partition, self.offset = 1, after.offset if after else 100
        FakeFeed.opened.append(self)

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.partition, self.offset)

    def read(self, timeout: float = 0.5) -> list[tuple[Cursor, Forecast]]:
        if FakeFeed.read_fails is not None:
            raise FakeFeed.read_fails
        batches = FakeFeed.queued.get(self.identifier, [])
        if not batches:
            time.sleep(min(timeout, 0.05))
            return []
        found = []
        for item in batches.pop(0):
            self.offset += 1
            found.append((self.cursor, item))
        return found

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def fake_feed(monkeypatch) -> type[FakeFeed]:
    FakeFeed.queued, FakeFeed.opened, FakeFeed.fail, FakeFeed.read_fails = {}, [], None, None
    monkeypatch.setattr(results, "ForecastFeed", FakeFeed)
    return FakeFeed


@pytest.fixture(scope="module")
def auth(tmp_path_factory) -> dict[str, Any]:
    tenants = {"tenant-a": (KEY_A, ["cell-a*"]), "tenant-b": (KEY_B, ["cell-b"])}
    return auth_fields(tmp_path_factory.mktemp("auth"), ADMIN, tenants)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.put(f"s3://datasets/cell-a1/scoring/{CLAIM}.csv", b"time,down\n")
    return store


def _client(auth: dict[str, Any], store: MemoryStore, **settings: Any) -> TestClient:
    app = create_app(GatewaySettings(**auth, **{"forecast_stream_seconds": 1.0, **settings}))
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    app.state.gateway.store = store
    app.state.gateway.producer = Published()
    return client


@pytest.fixture
def client(auth, store) -> Iterator[TestClient]:
    client = _client(auth, store)
    yield client
    client.__exit__(None, None, None)


def _slots(client: TestClient) -> results.StreamSlots:
    return client.app.state.forecast_streams


# ------------------------------------------------------------------------------------------ GET /score/{claim_id}


def test_a_scored_claim_is_streamed_as_the_parquet_the_replica_wrote(client, store):
    store.put(f"s3://inference-logs/cell-a1/2024-03-01/{CLAIM}.parquet", b"PAR1 the result PAR1")
    response = client.get(f"/score/{CLAIM}", params={"identifier": "cell-a1"}, headers=A)
    assert response.status_code == 200, response.text
    assert response.content == b"PAR1 the result PAR1"
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert response.headers["content-disposition"] == f'attachment; filename="{CLAIM}.parquet"'


def test_a_claim_not_scored_yet_is_202_with_when_to_ask_again(client):
    response = client.get(f"/score/{CLAIM}", params={"identifier": "cell-a1"}, headers=A)
    assert response.status_code == 202
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "claim_id": CLAIM,
        "identifier": "cell-a1",
        "status": "pending",
        "submitted_at": SUBMITTED.isoformat(),
    }


def test_a_claim_published_after_midnight_is_found_under_the_next_day(client, store):
    """Its rows were stored at 23:59:59.9; the claim (and the result's key) carries the next day."""
    store.put(f"s3://datasets/cell-a1/scoring/{CLAIM}.csv", b"rows", datetime(2024, 3, 1, 23, 59, 59, 900_000, UTC))
    store.put(f"s3://inference-logs/cell-a1/2024-03-02/{CLAIM}.parquet", b"next day")
    response = client.get(f"/score/{CLAIM}", params={"identifier": "cell-a1"}, headers=A)
    assert response.status_code == 200 and response.content == b"next day"


def test_a_claim_of_another_identifier_or_none_at_all_is_404(client, store):
    store.put(f"s3://inference-logs/cell-a1/2024-03-01/{CLAIM}.parquet", b"cell-a1's")
    for identifier, claim in (("cell-a2", CLAIM), ("cell-a1", "fedcba9876543210")):
        response = client.get(f"/score/{claim}", params={"identifier": identifier}, headers=A)
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == f"no claim {claim} for identifier {identifier!r}"


@pytest.mark.parametrize("claim", ["0123456789ABCDEF", "0123", "0123456789abcdef0", "%2E%2E", "c1"])
def test_a_claim_id_post_score_cannot_have_given_is_422(client, claim):
    response = client.get(f"/score/{claim}", params={"identifier": "cell-a1"}, headers=A)
    assert response.status_code == 422
    assert "16 lowercase hex" in response.json()["detail"]


def test_the_claim_id_post_score_answers_is_one_get_accepts(client, raw_data):
    rows = raw_data[1].head(30).to_csv(index=False).encode()
    posted = client.post(
        "/score", params={"identifier": "cell-a1"}, files={"rows": ("r.csv", io.BytesIO(rows))}, headers=A
    )
    assert posted.status_code == 202, posted.text
    claim = posted.json()["claim_id"]
    assert results.CLAIM_ID.match(claim)
    pending = client.get(f"/score/{claim}", params={"identifier": "cell-a1"}, headers=A)
    assert pending.status_code == 202 and pending.json()["claim_id"] == claim


def test_a_file_of_more_rows_than_a_claim_takes_is_413_and_nothing_is_stored_or_claimed(auth, store, raw_data):
    """Refused once parsing reaches row 21: a file that goes on with lines no parser would take is still 413, so
    what is past the cap is never read."""
    client = _client(auth, store, score_max_rows=20)
    try:
        gateway, before = client.app.state.gateway, dict(store.objects)
        for rows, status in ((21, 413), (20, 202)):
            csv = raw_data[1].head(rows).to_csv(index=False).encode()
            if status == 413:
                csv += b'"an unclosed quote, then no more CSV\n' * 1000
            files = {"rows": ("r.csv", io.BytesIO(csv))}
            answer = client.post("/score", params={"identifier": "cell-a1"}, files=files, headers=A)
            assert answer.status_code == status, answer.text
            if status == 413:
                assert answer.json()["detail"] == (
                    "rows file has more than 20 rows (SCORE_MAX_ROWS): send them in several files"
                )
                assert store.objects == before and gateway.producer.messages == []
        assert len(gateway.producer.messages) == 1
    finally:
        client.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------ GET /forecasts


def _events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            fields[name] = fields.get(name, "") + value
        events.append(fields)
    return events


def test_a_long_poll_answers_the_identifiers_forecasts_and_the_cursor_to_go_on_from(client, fake_feed):
    sent = [forecast("cell-a1", 2), forecast("cell-a1", 4)]
    fake_feed.queued["cell-a1"] = [sent]
    response = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 5}, headers=A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identifier"] == "cell-a1" and body["cursor"] == "1:102"
    assert [Forecast.model_validate(f) for f in body["forecasts"]] == sent
    (feed,) = fake_feed.opened
    assert feed.identifier == "cell-a1" and feed.after is None and feed.closed
    assert _slots(client).held == {}


def test_a_long_poll_with_nothing_new_answers_none_after_its_wait(client):
    started = time.monotonic()
    response = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 0.3}, headers=A)
    assert response.status_code == 200
    assert response.json()["forecasts"] == [] and response.json()["cursor"] == "1:100"
    assert 0.3 <= time.monotonic() - started < 5


def test_an_event_stream_sends_each_forecast_as_a_data_line_with_its_cursor_as_id_and_ends_after_its_lifetime(
    client, fake_feed
):
    first_sent, second_sent = forecast("cell-a1", 2), forecast("cell-a1", 4)
    fake_feed.queued["cell-a1"] = [[first_sent], [second_sent]]
    response = client.get("/forecasts", params={"identifier": "cell-a1"}, headers=A)  # lasts 1 s
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    first, *sent, end = _events(response.text)
    assert first == {"retry": "2000", "id": "1:100"}
    assert [(e["id"], Forecast.model_validate_json(e["data"])) for e in sent] == [
        ("1:101", first_sent),
        ("1:102", second_sent),
    ]
    assert end["event"] == "end" and end["id"] == "1:102" and '"cursor": "1:102"' in end["data"]
    assert fake_feed.opened[0].closed and _slots(client).held == {}


def test_a_quiet_stream_sends_keep_alive_comments_carrying_the_cursor(client, fake_feed, monkeypatch):
    monkeypatch.setattr(results, "KEEPALIVE_SECONDS", 0.2)
    response = client.get("/forecasts", params={"identifier": "cell-a1", "after": "1:7"}, headers=A)
    quiet = [event for event in _events(response.text) if event.get("") == "keep-alive"]
    assert quiet and all(event["id"] == "1:7" for event in quiet)


@pytest.mark.parametrize(
    "params, headers",
    [({"after": "1:57"}, {}), ({}, {"Last-Event-ID": "1:57"}), ({"after": "1:57"}, {"Last-Event-ID": "1:3"})],
)
def test_the_feed_goes_on_from_the_cursor_given_as_after_or_last_event_id(client, fake_feed, params, headers):
    response = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 0, **params}, headers={**A, **headers})
    assert response.status_code == 200
    assert fake_feed.opened[0].after == Cursor(1, 57)


MALFORMED = [
    {"after": "57"},
    {"after": "a:b"},
    {"after": "1:-3"},
    {"wait": 31},
    {"wait": -1},
    {"identifier": "cell-a/../x"},
]


@pytest.mark.parametrize("params", MALFORMED)
def test_a_malformed_cursor_wait_or_identifier_is_422(client, fake_feed, params):
    response = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 0, **params}, headers=A)
    assert response.status_code == 422, response.text
    assert fake_feed.opened == []


def test_streams_past_the_keys_bound_are_429_while_another_key_is_still_served(client, fake_feed):
    assert client.get("/forecasts", params={"identifier": "cell-a1", "wait": 0}, headers=A).status_code == 200
    slots = _slots(client)
    slots.held[key_hash(KEY_A)] = slots.per_key  # the key's streams, all open
    refused = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 0}, headers=A)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert "FORECAST_STREAMS_PER_KEY" in refused.json()["detail"]
    assert client.get("/forecasts", params={"identifier": "cell-b", "wait": 0}, headers=B).status_code == 200
    assert len(fake_feed.opened) == 2


def test_streams_past_the_replicas_bound_are_429_for_every_key(auth, store, fake_feed):
    client = _client(auth, store, forecast_streams_total=2)
    try:
        client.get("/forecasts", params={"identifier": "cell-b", "wait": 0}, headers=B)
        _slots(client).held = {"someone": 1, "someone else": 1}
        refused = client.get("/forecasts", params={"identifier": "cell-b", "wait": 0}, headers=B)
        assert refused.status_code == 429 and "FORECAST_STREAMS_TOTAL" in refused.json()["detail"]
    finally:
        client.__exit__(None, None, None)


def test_kafka_out_of_reach_is_503_and_the_slot_is_given_back(client, fake_feed):
    fake_feed.fail = KafkaException("broker down")
    response = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 0}, headers=A)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert _slots(client).held == {}


def test_a_topic_that_cannot_be_read_is_503_for_a_poll_and_an_error_event_that_ends_a_stream(client, fake_feed):
    fake_feed.read_fails = ForecastsUnavailable("topic 'forecasts': TOPIC_AUTHORIZATION_FAILED")
    polled = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 1}, headers=A)
    assert polled.status_code == 503 and "TOPIC_AUTHORIZATION_FAILED" in polled.json()["detail"]
    streamed = client.get("/forecasts", params={"identifier": "cell-a1"}, headers=A)
    _, error = _events(streamed.text)
    assert error["event"] == "error" and "TOPIC_AUTHORIZATION_FAILED" in error["data"]
    assert all(feed.closed for feed in fake_feed.opened) and _slots(client).held == {}


# ------------------------------------------------------------------------------------------ keys and scopes

ROUTES = [f"/score/{CLAIM}?identifier=cell-a1", "/forecasts?identifier=cell-a1&wait=0", "/forecasts?identifier=cell-a1"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("headers", [{}, bearer("flts_not-a-key")])
def test_without_a_valid_key_both_routes_are_401(client, store, fake_feed, path, headers):
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert store.calls == [] and fake_feed.opened == []


@pytest.mark.parametrize("path", ROUTES)
def test_another_tenants_identifier_is_403_before_anything_is_looked_up(client, store, fake_feed, path):
    store.put(f"s3://inference-logs/cell-a1/2024-03-01/{CLAIM}.parquet", b"cell-a1's")
    fake_feed.queued["cell-a1"] = [[forecast("cell-a1", 2)]]
    response = client.get(path, headers=B)
    assert response.status_code == 403
    assert "tenant-b" in response.json()["detail"] and "cell-a1" in response.json()["detail"]
    assert store.calls == [] and fake_feed.opened == []
    # global too needs the admin's key
    assert client.get(path.replace("cell-a1", "global"), headers=A).status_code == 403


def test_the_admin_reads_any_tenants_results(client, store, fake_feed):
    store.put(f"s3://inference-logs/cell-a1/2024-03-01/{CLAIM}.parquet", b"cell-a1's")
    admin = bearer(ADMIN)
    assert client.get(f"/score/{CLAIM}", params={"identifier": "cell-a1"}, headers=admin).content == b"cell-a1's"
    fake_feed.queued["cell-a1"] = [[forecast("cell-a1", 2)]]
    polled = client.get("/forecasts", params={"identifier": "cell-a1", "wait": 1}, headers=admin)
    assert len(polled.json()["forecasts"]) == 1
