"""`POST /measurements` cannot take the gateway down for everyone: its own body limit, a row cap enforced while the
body streams in, and a token bucket of rows per principal. Each refusal is a 4xx that publishes nothing and is
counted; what passes is published whole. (The gateway process's memory under these limits: tests/integration/
test_gateway_memory.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from flts.auth import key_hash, new_key
from flts.settings import GatewaySettings
from gateway_container.measurements import CsvRows, JsonRows, RowBuckets
from gateway_container.service import create_app

KEY_A, KEY_B = new_key(), new_key()
CAP = 5


class Published:
    """The producer's stand-in: every batch published on a topic."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Any]]] = []

    def publish_many(self, topic: str, messages: list[Any]) -> int:
        self.batches.append((topic, list(messages)))
        return len(messages)

    @property
    def rows(self) -> int:
        return sum(len(messages) for _, messages in self.batches)


def _client(**settings: Any) -> TestClient:
    fields = {"measurements_max_rows": CAP, "measurements_burst_rows": 1_000, **settings}
    return TestClient(create_app(GatewaySettings(**fields)), raise_server_exceptions=False)


def _published(client: TestClient) -> Published:
    published = Published()
    client.app.state.gateway.producer = published
    return published


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("flts_gateway_measurement_refusals_total", {"reason": reason}) or 0.0


def csv_rows(count: int, start: int = 0) -> bytes:
    lines = [f"2024-01-01T{(start + i) // 60:02d}:{(start + i) % 60:02d}:00,{i}.5" for i in range(count)]
    return ("time,down\n" + "\n".join(lines) + "\n").encode()


def json_rows(count: int, start: int = 0) -> bytes:
    rows = [{"time": f"2024-01-01T{(start + i) // 60:02d}:{(start + i) % 60:02d}:00", "down": i} for i in range(count)]
    return json.dumps({"identifier": "cell-1", "rows": rows}).encode()


BODIES = {"text/csv": csv_rows, "application/json": json_rows}


def post(client: TestClient, content_type: str, body: Any, headers: dict[str, str] | None = None):
    return client.post(
        "/measurements?identifier=cell-1", content=body, headers={"content-type": content_type, **(headers or {})}
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    with _client() as client:
        yield client


# ------------------------------------------------------------------------------------------------ body limit


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_measurements_max_bytes_is_413_counted_and_publishes_nothing(chunked):
    body = csv_rows(4)  # within the row cap; only its bytes are over
    content = iter([body[i : i + 16] for i in range(0, len(body), 16)]) if chunked else body
    before = refusals("too_large")
    with _client(measurements_max_bytes=len(body) - 1) as client:
        published = _published(client)
        response = post(client, "text/csv", content)
        at_the_limit = post(client, "text/csv", csv_rows(3))
    assert response.status_code == 413, response.text
    assert f"limit{' of' if chunked else ' is'} {len(body) - 1}" in response.json()["detail"]
    assert refusals("too_large") == before + 1
    assert at_the_limit.status_code == 202 and published.rows == 3


def test_the_measurements_body_limit_leaves_uploads_their_own():
    with _client(measurements_max_bytes=64, max_upload_bytes=100_000) as client:
        files = {"train": ("train.csv", b"time,down\n" + b"not-a-date,1\n" * 100, "text/csv")}
        upload = client.post("/datasets", files=files)
    assert upload.status_code == 422 and "row 1" in upload.json()["detail"]  # read, refused for its content


# ------------------------------------------------------------------------------------------------ row cap


@pytest.mark.parametrize("content_type", sorted(BODIES))
def test_rows_past_the_cap_are_413_with_the_cap_named_and_nothing_is_published(client, content_type):
    published = _published(client)
    before = refusals("too_many_rows")
    response = post(client, content_type, BODIES[content_type](CAP + 1))
    assert response.status_code == 413, response.text
    assert f"more than {CAP} rows" in response.json()["detail"] and "MEASUREMENTS_MAX_ROWS" in response.text
    assert refusals("too_many_rows") == before + 1
    assert published.rows == 0


@pytest.mark.parametrize("content_type", sorted(BODIES))
def test_rows_at_the_cap_are_published_one_message_each(client, content_type):
    published = _published(client)
    response = post(client, content_type, BODIES[content_type](CAP))
    assert response.status_code == 202, response.text
    assert response.json()["rows"] == CAP and published.rows == CAP


@pytest.mark.parametrize("content_type", sorted(BODIES))
def test_the_first_row_past_the_cap_stops_reading_the_body(client, content_type):
    """Straight to the ASGI app, a chunk at a time: the chunks after the one holding row cap + 1 are never read."""
    body = BODIES[content_type](CAP * 20)
    chunks = [body[i : i + 40] for i in range(0, len(body), 40)]
    pulled, sent = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/measurements", "raw_path": b"/measurements", "root_path": "", "query_string": b"identifier=cell-1",
        "headers": [(b"content-type", content_type.encode()), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    published = _published(client)
    client.portal.call(client.app, scope, receive, send)
    assert sent[0]["status"] == 413
    holding = len(BODIES[content_type](CAP + 1)) // 40 + 2  # the chunk that ends row cap + 1, and one more
    assert pulled <= holding < len(chunks), (pulled, len(chunks))
    assert published.rows == 0


def test_a_quoted_newline_or_a_blank_line_is_not_a_row():
    reader = CsvRows(max_rows=2)
    for chunk in (b'time,note,down\n2024-01-01,"two\nlines",1\n', b"\n\r\n2024-01-01T00:02", b":00,x,2\n"):
        reader.feed(chunk)
    reader.finish()
    assert reader.rows == 2


def test_json_rows_split_anywhere_across_chunks_are_counted_once():
    body = json_rows(CAP + 1)
    for size in (1, 7, 64):
        reader = JsonRows(max_rows=CAP)
        with pytest.raises(Exception, match="more than") as refused:
            for i in range(0, len(body), size):
                reader.feed(body[i : i + size])
        assert refused.value.status_code == 413 and reader.rows == CAP + 1


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"rows": [{"time": "2024-01-01T00:00:00", "down": [1]}]}', "row 1, column 'down'"),
        (b'{"rows": [{"time": "2024-01-01T00:00:00", "down": true}]}', "not boolean"),
        (b'{"rows": [1]}', "row 1: a row is an object"),
        (b'{"rows": {"time": 1}}', "rows:"),
        (b'{"identifier": 7, "rows": []}', "identifier"),
        (b'{"rows": [{"time": "2024-01-01T00:00:00", "down": 1}', "not valid JSON"),
        (b'{"rows": [{"time": "2024-01-01T00:00:00", "down": 1}]} trailing', "not valid JSON"),
        (b"[]", "body"),
        (b"", "not valid JSON"),
    ],
)
def test_a_malformed_json_body_is_422_with_where_and_nothing_is_published(client, body, fragment):
    published = _published(client)
    response = post(client, "application/json", body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    assert published.rows == 0


# ------------------------------------------------------------------------------------------------ rate


@pytest.fixture
def tenants(tmp_path) -> dict[str, Any]:
    keys = tmp_path / "api-keys.yaml"
    principals = [
        {"name": "tenant-a", "sha256": key_hash(KEY_A), "identifiers": ["cell-*"]},
        {"name": "tenant-b", "sha256": key_hash(KEY_B), "identifiers": ["cell-*"]},
    ]
    keys.write_text(yaml.safe_dump({"principals": principals}))
    return {"auth_enabled": True, "auth_keys_file": keys}


def test_a_principal_past_its_rows_per_second_gets_429_with_retry_after_and_others_do_not(tenants):
    before = refusals("rate_limited")
    limits = {"measurements_rows_per_second": 0.5, "measurements_burst_rows": CAP}
    with _client(**tenants, **limits) as client:
        published = _published(client)
        a, b = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}
        burst = post(client, "text/csv", csv_rows(CAP), a)
        over = post(client, "text/csv", csv_rows(2, start=CAP), a)
        other = post(client, "text/csv", csv_rows(CAP), b)
    assert burst.status_code == 202 and other.status_code == 202
    assert over.status_code == 429, over.text
    assert 1 <= int(over.headers["Retry-After"]) <= 5  # 2 rows at 0.5 a second, less what refilled meanwhile
    assert "tenant-a" in over.json()["detail"] and "nothing was published" in over.json()["detail"]
    assert refusals("rate_limited") >= before + 1
    assert published.rows == 2 * CAP


def test_a_row_bucket_refills_at_its_rate_up_to_its_burst():
    now = [0.0]
    buckets = RowBuckets(rate=10, burst=100, clock=lambda: now[0])
    assert buckets.take("a", 100) == 0.0
    assert buckets.take("a", 5) == pytest.approx(0.5)  # refused: 5 rows at 10 a second
    assert buckets.take("a", 1, check_only=True) == pytest.approx(0.1)
    now[0] = 0.5
    assert buckets.take("a", 5) == 0.0
    now[0] = 1_000.0
    assert buckets.take("a", 101) == pytest.approx(0.1)  # never more than the burst
    assert buckets.take("b", 100) == 0.0  # a bucket each


def test_a_burst_below_the_row_cap_is_refused_at_start():
    with pytest.raises(ValueError, match="MEASUREMENTS_BURST_ROWS"):
        GatewaySettings(measurements_max_rows=100, measurements_burst_rows=99)
