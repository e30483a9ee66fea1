"""The gateway's refusals through FastAPI's TestClient: nothing is stored when an upload is refused."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from flts.config import PipelineConfig
from flts.kafka import DeliveryTimeout, MessageProducer
from flts.settings import GatewaySettings
from gateway_container.gateway import Gateway
from gateway_container.service import create_app


def _client(max_upload_bytes: int) -> TestClient:
    return TestClient(create_app(GatewaySettings(max_upload_bytes=max_upload_bytes)), raise_server_exceptions=False)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with _client(400_000) as client:
        yield client


@pytest.fixture(scope="module")
def csv_bytes(raw_data) -> bytes:
    return raw_data[0].head(400).to_csv(index=False).encode()


def _upload(client: TestClient, content: bytes, params: dict | None = None, name: str = "train.csv"):
    return client.post("/datasets", files={"train": (name, io.BytesIO(content), "text/csv")}, params=params or {})


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty"),
        (b"when,down\n2024-01-01,1\n", "time"),
        (b"time,down\nnot-a-date,1\n", "row 1"),
        (b"time,down\n2024-01-01T00:00:00,1\n2024-01-01T00:02:00,1\n", "rows"),
    ],
)
def test_a_malformed_upload_is_422_with_the_reason(client, content, fragment):
    response = _upload(client, content)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_a_non_numeric_value_names_its_column_and_row(client, csv_bytes):
    lines = csv_bytes.decode().splitlines()
    cells = lines[5].split(",")
    cells[1] = "lots"
    lines[5] = ",".join(cells)
    response = _upload(client, "\n".join(lines).encode())
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "down" in detail and "5" in detail


@pytest.mark.parametrize("limit", [1_000, 200_000])
def test_an_oversized_upload_is_413(csv_bytes, limit):
    with _client(limit) as small:
        response = _upload(small, csv_bytes * 8)
    assert response.status_code == 413
    assert "the limit is" in response.json()["detail"]


def test_a_chunked_oversized_body_is_413_without_a_content_length(csv_bytes):
    """No Content-Length to check up front: the body is counted as it streams and cut at the limit."""
    boundary = "flts-test-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="train"; filename="t.csv"\r\n\r\n'.encode()
    chunks = iter([head, *[csv_bytes] * 40, f"\r\n--{boundary}--\r\n".encode()])
    with _client(10_000) as small:
        response = small.post(
            "/datasets", content=chunks, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
    assert response.status_code == 413, response.text
    assert "exceeds the limit" in response.json()["detail"]


def test_a_column_name_mlflow_cannot_log_is_422_at_upload(client, raw_data):
    frame = raw_data[0].head(400).rename(columns={"up": "util%"})
    response = _upload(client, frame.to_csv(index=False).encode())
    assert response.status_code == 422
    assert "'util%'" in response.json()["detail"]


def test_a_bad_identifier_is_422(client, csv_bytes):
    response = _upload(client, csv_bytes, {"identifier": "../etc"})
    assert response.status_code == 422
    assert "identifier" in response.json()["detail"]


def test_a_file_with_several_identifiers_is_422(client, raw_data):
    frame = raw_data[0].head(400).copy()
    frame["identifier"] = ["cell-a", "cell-b"] * 200
    response = _upload(client, frame.to_csv(index=False).encode())
    assert response.status_code == 422
    assert "identifier" in response.json()["detail"]


@pytest.mark.parametrize(
    "path", ["/objects/datasets/a/%2E%2E/%2E%2E/secret", "/objects/datasets/a//b", "/objects/datasets/a\\b"]
)
def test_a_key_cannot_escape_its_bucket(client, path):
    assert client.get(path).status_code == 400


@pytest.mark.parametrize("bucket", ["private", "mlflow", "processed-data", "model-promotion", "inference-logs"])
def test_only_uploads_can_be_read_not_model_weights_or_pointers(client, bucket):
    response = client.get(f"/objects/{bucket}/global/key.json")
    assert response.status_code == 404
    assert "only uploads are served" in response.json()["detail"]


def test_a_run_status_needs_a_real_config_hash(client):
    assert client.get("/runs/not-a-hash").status_code == 422


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "/datasets" in client.get("/openapi.json").json()["paths"]


def _score(client: TestClient, content: bytes, params: dict | None = None):
    return client.post("/score", files={"rows": ("rows.csv", io.BytesIO(content), "text/csv")}, params=params or {})


@pytest.mark.parametrize(
    "content, params, fragment",
    [
        (b"", {}, "empty"),
        (b"when,down\n2024-01-01,1\n", {}, "time"),
        (b"time,down\nnot-a-date,1\n", {}, "row 1"),
        (b"time,identifier,down\n2024-01-01,a,1\n2024-01-01T00:02:00,b,2\n", {}, "2 series"),
        (b"time,down\n2024-01-01,1\n", {"identifier": "../etc"}, "identifier"),
    ],
)
def test_rows_to_score_are_checked_as_uploads_are_and_refused_with_422(client, content, params, fragment):
    response = _score(client, content, params)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    "body, content_type, fragment",
    [
        (b'{"rows": []}', "application/json", "at least 1"),
        (b'{"rows": [{"time": "2024-01-01T00:00:00", "down": "lots"}]}', "application/json", "down"),
        (b'{"rows": [{"down": 1}]}', "application/json", "time"),
        (b'{"rows": [{"time": "2024-01-01T00:00:00", "down": 1}], "extra": 1}', "application/json", "extra"),
        (b"time,down\nnot-a-date,1\n", "text/csv", "row 1"),
    ],
)
def test_malformed_measurements_are_422_with_the_reason(client, body, content_type, fragment):
    response = client.post("/measurements", content=body, headers={"content-type": content_type})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_measurements_of_another_type_are_415(client):
    response = client.post("/measurements", content=b"time,down", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_json_and_csv_measurements_become_the_same_messages():
    gateway = Gateway(GatewaySettings(), PipelineConfig())
    rows = [{"time": "2024-01-01T00:00:00Z", "down": 1.5, "up": None}, {"time": "2024-01-01T00:02:00", "down": 2}]
    as_json = gateway.measurements(
        json.dumps({"identifier": "cell-7", "rows": rows}).encode(), "application/json", None
    )
    csv = b"time,identifier,down,up\n2024-01-01T00:00:00Z,cell-7,1.5,\n2024-01-01T00:02:00,cell-7,2,\n"
    as_csv = gateway.measurements(csv, "text/csv", None)
    for found in (as_json, as_csv):
        assert [(m.identifier, m.ts.isoformat(), m.values) for m in found] == [
            ("cell-7", "2024-01-01T00:00:00+00:00", {"down": 1.5, "up": None}),
            ("cell-7", "2024-01-01T00:02:00+00:00", {"down": 2.0, "up": None}),
        ]


def test_measurements_the_broker_does_not_acknowledge_are_503_with_retry_after(raw_data):
    """Kafka down: the caller is told to retry (503), not handed a 500. A real producer against a closed port."""
    settings = GatewaySettings(kafka_bootstrap_servers="127.0.0.1:9")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.gateway.producer = MessageProducer(settings, **{"message.timeout.ms": 1500})
        body = raw_data[1].head(3).to_csv(index=False).encode()
        response = client.post("/measurements", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5" and "retry" in response.json()["detail"]


def test_a_timeout_that_is_not_the_broker_s_is_not_answered_as_the_broker_being_down(raw_data, monkeypatch):
    """Only MessageProducer's own DeliveryTimeout means "the broker did not acknowledge": a TimeoutError from
    anywhere else (here: the upload's object store) must not be dressed up as a retryable broker outage."""
    settings = GatewaySettings(kafka_bootstrap_servers="127.0.0.1:9")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.gateway.producer = MessageProducer(settings, **{"message.timeout.ms": 60_000})
        with pytest.raises(DeliveryTimeout):  # no report at all within the call's own timeout
            client.app.state.gateway.producer.send("measurements", None, b"{}", None, timeout=0.5)

        def store_timed_out(*_args, **_kwargs):
            raise TimeoutError("the object store did not answer")

        monkeypatch.setattr(client.app.state.gateway, "measurements_of", store_timed_out)
        body = raw_data[1].head(3).to_csv(index=False).encode()
        response = client.post("/measurements", content=body, headers={"content-type": "text/csv"})
    assert response.status_code != 503 and "broker" not in response.text, response.text
