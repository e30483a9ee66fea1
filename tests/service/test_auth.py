"""Authentication and tenant scopes on every route of both APIs (auth on, keys from a keys file + the admin key).

Three callers per route: none (401), tenant B asking for tenant A's identifier (403), and tenant A or the
admin (the route's own answer). Routes that need the object store for their own answer are followed to
it on the real stack in tests/integration/test_auth_stack.py.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tenant_keys import auth_fields

from flts.auth import KeyRing, Principal, key_hash, new_key
from flts.settings import AuthSettings, GatewaySettings, InferenceSettings
from gateway_container.service import create_app as create_gateway
from inference_container.champions import Champions
from inference_container.service import create_app as create_inference

ADMIN, KEY_A, KEY_B = new_key(), new_key(), new_key()
HASH = "a" * 64
UPLOAD_LIMIT = 100_000


@pytest.fixture(scope="module")
def auth(tmp_path_factory) -> dict[str, object]:
    """Settings fields: tenant A owns cell-a*, tenant B owns cell-b; the admin key comes from the env field."""
    tenants = {"tenant-a": (KEY_A, ["cell-a*"]), "tenant-b": (KEY_B, ["cell-b"])}
    return auth_fields(tmp_path_factory.mktemp("auth"), ADMIN, tenants)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gateway(auth) -> Iterator[TestClient]:
    app = create_gateway(GatewaySettings(max_upload_bytes=UPLOAD_LIMIT, **auth))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def inference(auth, gru_model) -> Iterator[TestClient]:
    champions = Champions()
    champions.install(gru_model)
    tenant_identity = dataclasses.replace(gru_model.identity, identifier="cell-a1")
    champions.install(dataclasses.replace(gru_model, identity=tenant_identity))
    with TestClient(create_inference(InferenceSettings(**auth), champions, follow_registry=False)) as client:
        yield client


@pytest.fixture(scope="module")
def window(raw_data) -> dict:
    from flts.client import window_request

    return window_request(raw_data[1].head(40), 10)


# ------------------------------------------------------------------------------------------------ gateway

GATEWAY_ROUTES = [
    ("GET", "/datasets?identifier=cell-a1"),
    ("GET", "/lineages?identifier=cell-a1"),
    ("GET", f"/runs/{HASH}?identifier=cell-a1"),
    ("GET", "/objects/datasets/cell-a1/0123456789abcdef/train.csv"),
    ("GET", "/download/datasets/cell-a1/0123456789abcdef/train.csv"),
    ("GET", f"/download/processed-data/cell-a1/{HASH}/test.parquet"),
    ("GET", "/download/processed-data/test_processed_data.parquet?identifier=cell-a1"),
    ("GET", "/score/0123456789abcdef?identifier=cell-a1"),
    ("GET", "/forecasts?identifier=cell-a1"),
    ("POST", "/datasets?identifier=cell-a1"),
    ("POST", "/score?identifier=cell-a1"),
    ("POST", "/measurements?identifier=cell-a1"),
]


def _gateway_call(client: TestClient, method: str, path: str, headers: dict[str, str]):
    if method == "POST":
        files = {name: (f"{name}.csv", io.BytesIO(b""), "text/csv") for name in ("train", "rows")}
        return client.post(path, files=files, headers=headers)
    return client.get(path, headers=headers)


@pytest.mark.parametrize("method, path", GATEWAY_ROUTES)
@pytest.mark.parametrize("headers", [{}, bearer("flts_not-a-key"), {"Authorization": f"Basic {KEY_A}"}])
def test_a_gateway_route_without_a_valid_key_is_401(gateway, method, path, headers):
    response = _gateway_call(gateway, method, path, headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("method, path", GATEWAY_ROUTES)
def test_tenant_b_is_refused_tenant_a_identifiers_on_every_gateway_route_with_403(gateway, method, path):
    response = _gateway_call(gateway, method, path, bearer(KEY_B))
    assert response.status_code == 403, response.text
    assert "tenant-b" in response.json()["detail"] and "cell-a1" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/datasets",
        "/lineages",
        f"/runs/{HASH}",
        "/objects/datasets/global/0123456789abcdef/train.csv",
        f"/download/processed-data/global/{HASH}/test.parquet",
        "/download/processed-data/test_processed_data.parquet",
        "/score/0123456789abcdef",
        "/forecasts",
    ],
)
def test_global_is_refused_to_a_tenant_key_with_403(gateway, path):
    response = gateway.get(path, headers=bearer(KEY_A))
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_an_upload_in_scope_reaches_validation(gateway):
    response = _gateway_call(gateway, "POST", "/datasets?identifier=cell-a1", {"X-API-Key": KEY_A})
    assert response.status_code == 422 and "empty" in response.json()["detail"]


def test_an_upload_without_identifier_falls_back_to_global_which_a_tenant_may_not_use(gateway, raw_data):
    content = raw_data[0].drop(columns=["identifier"], errors="ignore").head(400).to_csv(index=False).encode()
    files = {"train": ("train.csv", io.BytesIO(content), "text/csv")}
    response = gateway.post("/datasets", files=files, headers=bearer(KEY_A))
    assert response.status_code == 403 and "'global'" in response.json()["detail"]


def test_force_needs_the_admin_key(gateway):
    response = _gateway_call(gateway, "POST", "/datasets?identifier=cell-a1&force=true", bearer(KEY_A))
    assert response.status_code == 403 and "force" in response.json()["detail"]
    admin = _gateway_call(gateway, "POST", "/datasets?identifier=cell-a1&force=true", bearer(ADMIN))
    assert admin.status_code == 422  # past authorisation: the empty file is refused


def test_a_run_status_in_scope_reaches_validation(gateway):
    response = gateway.get("/runs/not-a-hash?identifier=cell-a1", headers=bearer(KEY_A))
    assert response.status_code == 422 and "config_hash" in response.json()["detail"]


def test_an_anonymous_upload_is_refused_before_its_body_is_read(gateway):
    """The 401 comes first: a body over the upload limit gets it, where a keyed caller gets the 413."""
    files = {"train": ("train.csv", io.BytesIO(b"x" * (UPLOAD_LIMIT * 2)), "text/csv")}
    assert gateway.post("/datasets?identifier=cell-a1", files=files).status_code == 401
    files = {"train": ("train.csv", io.BytesIO(b"x" * (UPLOAD_LIMIT * 2)), "text/csv")}
    assert gateway.post("/datasets?identifier=cell-a1", files=files, headers=bearer(KEY_A)).status_code == 413


def test_refusals_are_counted_by_status(gateway):
    gateway.get("/datasets?identifier=cell-a1")
    gateway.get("/datasets?identifier=cell-a1", headers=bearer(KEY_B))
    metrics = gateway.get("/metrics/").text
    assert 'flts_auth_refusals_total{status="401"}' in metrics
    assert 'flts_auth_refusals_total{status="403"}' in metrics


def test_probes_metrics_and_docs_need_no_key(gateway, inference):
    for client in (gateway, inference):
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200
    assert inference.get("/readyz").json() == {"status": "ready", "models": 2}


def test_the_metrics_anyone_may_scrape_name_no_identifier(inference, window):
    """/metrics needs no key (Prometheus scrapes it): nothing in it may tell a caller which series exist."""
    assert (
        inference.post("/predict", json={**window, "identifier": "cell-a1"}, headers=bearer(KEY_A)).status_code == 200
    )
    assert "cell-a1" not in inference.get("/metrics/").text


def test_the_openapi_documents_both_key_schemes(gateway, inference):
    for client in (gateway, inference):
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    predict = inference.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert predict["security"]


# ------------------------------------------------------------------------------------------------ inference


@pytest.mark.parametrize("headers", [{}, bearer("flts_not-a-key")])
def test_inference_routes_without_a_valid_key_are_401(inference, window, headers):
    assert inference.post("/predict", json=window, headers=headers).status_code == 401
    assert inference.get("/model-info", headers=headers).status_code == 401
    assert inference.get("/models", headers=headers).status_code == 401


def test_tenant_b_cannot_predict_or_describe_for_tenant_a(inference, window):
    response = inference.post("/predict", json={**window, "identifier": "cell-a1"}, headers=bearer(KEY_B))
    assert response.status_code == 403
    assert inference.get("/model-info?identifier=cell-a1", headers=bearer(KEY_B)).status_code == 403


def test_tenant_a_predicts_for_its_own_identifier(inference, window):
    response = inference.post("/predict", json={**window, "identifier": "cell-a1"}, headers=bearer(KEY_A))
    assert response.status_code == 200, response.text
    assert response.json()["identifier"] == "cell-a1"
    assert inference.get("/model-info?identifier=cell-a1", headers={"X-API-Key": KEY_A}).status_code == 200


def test_the_global_champion_needs_the_admin_key(inference, window):
    assert inference.post("/predict", json=window, headers=bearer(KEY_A)).status_code == 403
    assert inference.post("/predict", json=window, headers=bearer(ADMIN)).json()["identifier"] == "global"


def test_a_missing_champion_in_scope_is_404_naming_no_other_tenant(inference, window):
    response = inference.post("/predict", json={**window, "identifier": "cell-b"}, headers=bearer(KEY_B))
    assert response.status_code == 404
    assert "cell-b" in response.text and "cell-a1" not in response.text and "global" not in response.text


def test_models_lists_only_the_callers_champions(inference):
    def listed(key: str) -> set[str]:
        return {m["identifier"] for m in inference.get("/models", headers=bearer(key)).json()}

    assert listed(KEY_A) == {"cell-a1"}
    assert listed(KEY_B) == set()
    assert listed(ADMIN) == {"global", "cell-a1"}


# ------------------------------------------------------------------------------------------------ the key ring


def test_auth_on_without_any_key_refuses_to_start():
    with pytest.raises(ValueError, match="AUTH_ADMIN_KEY or AUTH_KEYS_FILE"):
        KeyRing.from_settings(AuthSettings(auth_enabled=True))


def test_one_key_for_two_principals_is_refused_at_start():
    twice = [Principal(name=name, sha256=key_hash(KEY_A), identifiers=("cell-a1",)) for name in ("one", "two")]
    with pytest.raises(ValueError, match="share one key"):
        KeyRing(twice)


def test_auth_off_makes_every_caller_the_admin():
    ring = KeyRing.from_settings(AuthSettings(auth_enabled=False))
    assert ring.principal(None) is not None and ring.principal(None).admin


def test_a_pattern_never_grants_global_to_a_tenant():
    everything = Principal(name="wide", sha256=key_hash(KEY_A), identifiers=("*",))
    assert everything.may_use("cell-9") and not everything.may_use("global")


def test_the_keys_file_holds_hashes_only(auth):
    text = auth["auth_keys_file"].read_text()
    assert KEY_A not in text and key_hash(KEY_A) in text
