"""`GET /download/{bucket}/{key}` through FastAPI's TestClient, on an in-memory object store: a caller's uploads,
its lineages' processed splits and the earlier system's flat names; never weights or pointers.

401/403: tests/service/test_auth.py; the real stack and the earlier system's Locust client:
tests/e2e/test_third_party_clients.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flts.settings import GatewaySettings
from flts.storage import ObjectNotFound
from gateway_container.service import create_app

OLD, NEW = "a" * 64, "b" * 64


class MemoryStore:
    """The few ObjectStore calls the download routes and `Gateway.lineages` make, on a dict of s3:// URIs."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}

    def put(self, uri: str, data: bytes, at: datetime) -> None:
        self.objects[uri] = (data, at)

    def exists(self, uri: str) -> bool:
        return uri in self.objects

    def iter_chunks(self, uri: str) -> Iterator[bytes]:
        if uri not in self.objects:
            raise ObjectNotFound(uri)
        yield self.objects[uri][0]

    def list(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        keys = [uri.removeprefix(f"s3://{bucket}/") for uri in self.objects if uri.startswith(f"s3://{bucket}/")]
        return [
            {"Key": key, "LastModified": self.objects[f"s3://{bucket}/{key}"][1]}
            for key in sorted(keys)
            if key.startswith(prefix)
        ]


@pytest.fixture
def store() -> MemoryStore:
    """Two lineages of `global` (NEW preprocessed after OLD), one of cell-1, and an upload of cell-1."""
    store, then = MemoryStore(), datetime(2024, 1, 1, tzinfo=UTC)
    for n, (identifier, config_hash) in enumerate([("global", OLD), ("global", NEW), ("cell-1", OLD)]):
        prefix = f"s3://processed-data/{identifier}/{config_hash}"
        for split in ("train", "validation", "test"):
            store.put(f"{prefix}/{split}.parquet", f"{identifier}:{config_hash[0]}:{split}".encode(), then)
        store.put(f"{prefix}/metadata.json", b"{}", then)
        store.put(f"{prefix}/claim.json", b"{}", then + timedelta(minutes=n))
    store.put("s3://datasets/cell-1/0123456789abcdef/train.csv", b"time,down\n", then)
    store.put("s3://model-promotion/global/" + NEW + "/current.json", b"{}", then)
    return store


@pytest.fixture
def client(store: MemoryStore) -> Iterator[TestClient]:
    with TestClient(create_app(GatewaySettings()), raise_server_exceptions=False) as client:
        client.app.state.gateway.store = store
        yield client


@pytest.mark.parametrize(
    "path, params, content",
    [
        ("processed-data/test_processed_data.parquet", {}, b"global:b:test"),
        ("processed-data/train_processed_data.parquet", {}, b"global:b:train"),
        ("processed-data/processed_data.parquet", {}, b"global:b:train"),
        ("processed-data/val_processed_data.parquet", {}, b"global:b:validation"),
        ("processed-data/test_processed_data.parquet", {"identifier": "cell-1"}, b"cell-1:a:test"),
        (f"processed-data/global/{OLD}/validation.parquet", {}, b"global:a:validation"),
        (f"processed-data/cell-1/{OLD}/test.parquet", {"identifier": "ignored"}, b"cell-1:a:test"),
        ("datasets/cell-1/0123456789abcdef/train.csv", {}, b"time,down\n"),
    ],
)
def test_a_split_or_an_upload_is_served_and_an_earlier_flat_name_reads_the_newest_lineage(
    client, path, params, content
):
    response = client.get(f"/download/{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.content == content
    name = path.rsplit("/", 1)[-1]
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'


def test_the_objects_route_serves_the_same_upload_and_still_no_split(client):
    upload = client.get("/objects/datasets/cell-1/0123456789abcdef/train.csv")
    assert upload.status_code == 200 and upload.content == b"time,down\n"
    split = client.get(f"/objects/processed-data/global/{OLD}/test.parquet")
    assert split.status_code == 404 and "only uploads are served" in split.json()["detail"]


@pytest.mark.parametrize("bucket", ["mlflow", "model-promotion", "inference-logs", "private"])
def test_model_weights_pointers_and_other_buckets_are_never_served(client, bucket):
    response = client.get(f"/download/{bucket}/global/{NEW}/current.json")
    assert response.status_code == 404
    assert "only uploads" in response.json()["detail"]


@pytest.mark.parametrize("name", ["metadata.json", "claim.json", "scaler.json", "model.onnx"])
def test_only_the_splits_of_a_lineage_are_served(client, name):
    response = client.get(f"/download/processed-data/global/{OLD}/{name}")
    assert response.status_code == 404
    assert "only the splits" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "processed-data/a/%2E%2E/%2E%2E/secret",
        "processed-data/a//b",
        "datasets/a\\b",
        "datasets/a/%2E/b",
        "processed-data/everything.parquet",
        "processed-data/global/test.parquet",
        "processed-data/global/not-a-hash/test.parquet",
        f"processed-data/global/{OLD}/test.parquet/more",
        f"processed-data/-bad-/{OLD}/test.parquet",
    ],
)
def test_a_malformed_key_is_400(client, path):
    response = client.get(f"/download/{path}")
    assert response.status_code == 400, response.text


def test_missing_objects_and_identifiers_without_a_lineage_are_404(client):
    assert client.get(f"/download/processed-data/global/{'c' * 64}/test.parquet").status_code == 404
    assert client.get("/download/datasets/cell-1/0123456789abcdef/test.csv").status_code == 404
    none = client.get("/download/processed-data/test_processed_data.parquet", params={"identifier": "cell-2"})
    assert none.status_code == 404 and "no processed lineage" in none.json()["detail"]


def test_a_malformed_identifier_for_an_earlier_name_is_422(client):
    response = client.get("/download/processed-data/test_processed_data.parquet", params={"identifier": "../x"})
    assert response.status_code == 422


def test_a_page_of_lineages_reads_only_its_own_decisions(client, store):
    """The status page's index lists a few lineages of every identifier: it reads their decisions, not every one."""
    checked: list[str] = []
    exists = store.exists
    store.exists = lambda uri: checked.append(uri) or exists(uri)
    newest = client.app.state.gateway.lineages("global", limit=1)
    assert [lineage.config_hash for lineage in newest] == [NEW]
    assert not [uri for uri in checked if OLD in uri], "the decision of a lineage not listed was read"
