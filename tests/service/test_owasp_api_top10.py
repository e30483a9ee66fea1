"""The OWASP API Security Top 10 (2023), item by item, against the gateway's and inference's apps as create_app
builds them with auth on (tenant A owns `cell-a*`, tenant B `cell-b`, and the admin key), through TestClient.

The route walks (API1, API2, API9) take every route the apps have when the test runs, included routers flattened:
a route added later is covered without a word here, and one without a key check fails them. What needs no key is
named once, in PUBLIC, with the reason; the two listings that answer every key with its own objects, in
CALLER_FILTERED.

Each item of the list, the threat it is here, and its tests (`test_<item>_...`; "..." is the item's name):

API1  Broken Object Level Authorization: a tenant reads, lists, uploads to, follows or predicts for another's
      identifier. test_api1_..._every_route_refuses_another_tenants_identifier (the walk: 403 on every route),
      test_api1_..._listings_and_object_keys_stay_in_the_callers_scope
API2  Broken Authentication: a route answers without a valid key; a key taken from a cookie or the query; a weak
      admin key. test_api2_..._every_route_refuses_a_missing_or_unknown_key (the walk: 401, or the login page),
      test_api2_..._keys_come_from_the_headers_only_and_weak_ones_stop_the_service
API3  Broken Object Property Level Authorization: a body sets a property its caller may not (the model, `force`);
      the public document tells when the admin-only `global` series was last measured.
      test_api3_..._no_foreign_property_set_and_no_latest_times_published
API4  Unrestricted Resource Consumption: bodies, batches, horizons and pages without bounds.
      test_api4_..._bodies_batches_horizons_and_pages_are_bounded
API5  Broken Function Level Authorization: a tenant forces a retrain, uses `global`, deletes or replaces anything.
      test_api5_..._admin_functions_need_the_admin_key_and_nothing_deletes
API6  Unrestricted Access to Sensitive Business Flows: training (the expensive flow) driven again and again.
      test_api6_..._a_tenant_cannot_make_the_pipeline_retrain_the_same_data
API7  Server Side Request Forgery: a URL fetched on a caller's behalf. None is taken, and that is what is tested:
      test_api7_..._no_input_is_a_url_and_object_names_stay_in_the_store
API8  Security Misconfiguration: stack traces or internal endpoints in answers, probes or docs; cross-origin reads;
      placeholder secrets. test_api8_..._errors_docs_and_probes_name_nothing_internal
API9  Improper Inventory Management: a route answered but not documented, one documented but gone, an operation
      that does not declare the key schemes. test_api9_..._every_route_is_documented_or_named_and_declares_its_keys
API10 Unsafe Consumption of APIs: what the APIs show from Kafka and the store (dead letters, eval's reasons) taken as
      markup. test_api10_..._what_the_status_page_reads_from_kafka_and_the_store_is_escaped (and, outside these
      APIs, a dead letter replayed with the admin's rights to any topic: tests/unit/test_dead_letter_replay.py)

Beyond these apps: the backbone's least privilege (tests/integration/test_storage_users.py, test_kafka_users.py),
the whole stack with keys (tests/integration/test_auth_stack.py), fuzzing (tests/service/test_api_fuzz.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from tenant_keys import auth_fields

from flts.auth import new_key
from flts.config import InferenceConfig
from flts.deadletters import Letter
from flts.messages import DeadLetter
from flts.predict import iso_times
from flts.settings import GatewaySettings, InferenceSettings
from flts.storage import StoredObject
from gateway_container import ui
from gateway_container.service import create_app as create_gateway
from inference_container.champions import Champions
from inference_container.service import create_app as create_inference

try:  # FastAPI >= 0.160 keeps included routers as such; this flattens them
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover - older FastAPI: app.routes is flat already
    iter_route_contexts = None

ADMIN, KEY_A, KEY_B = new_key(), new_key(), new_key()
OURS = "cell-a1"  # tenant A's identifier, which tenant B asks for
HASH = "a" * 64
UPLOAD_LIMIT = 100_000
LIMITS = InferenceConfig(max_request_bytes=64 * 1024, max_batch_windows=4)

# What anyone may call without a key, and why. Nothing else: the walks below fail for any other route that answers.
PUBLIC = {
    "/healthz": "liveness probe (the kubelet, compose): ok or the failure, nothing of any tenant",
    "/readyz": "readiness probe: ready, or a plain reason and a count of models (API8 checks it names nothing)",
    "/metrics": "Prometheus scrapes it; no metric names an identifier (test_auth.py)",
    "/openapi.json": "the API's description: routes and schemas, no data (API3, API8)",
    "/docs": "the description, rendered",
    "/docs/oauth2-redirect": "part of the rendered description",
    "/redoc": "the description, rendered",
    "/v2": "Open Inference Protocol server metadata: name, version, extensions, no model or identifier",
    "/v2/health/live": "the Open Inference Protocol's liveness probe",
    "/v2/health/ready": "the Open Inference Protocol's readiness probe",
    "/ui/login": "the page that asks a browser for its key",
    "/ui/static/{name}": "the status page's script and style sheet, files of the package",
}
# Routes that take no identifier: they answer every key with its own objects only (API1 checks what they show).
CALLER_FILTERED = {
    ("inference", "GET", "/models"): "the champions the key may use",
    ("gateway", "GET", "/ui"): "the identifiers the key may use; the dead letters to an admin only (test_gateway_ui)",
}
# The status pages answer a browser without a key with the login page (their 401).
BROWSER_PAGES = "/ui"
# A value for each path parameter: tenant A's where it names an identifier; anything else a plausible id.
PLAUSIBLE = {
    "identifier": OURS,
    "name": OURS,  # /v2/models/{name}: the identifier whose champion answers
    "config_hash": HASH,
    "bucket": "datasets",
    "key": f"{OURS}/0123456789abcdef/train.csv",
}
PLAUSIBLE_ID = "0123456789abcdef"  # claim_id, dataset_id and whatever id a route adds later
# Routes left out of the OpenAPI document on purpose, by path prefix.
UNDOCUMENTED = {
    "/openapi.json": "the document itself",
    "/docs": "the document, rendered",
    "/redoc": "the document, rendered",
    "/metrics": "Prometheus' scrape, not part of the API",
    "/ui": "the status pages: HTML for a browser, their login page and static files",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def walked_routes(app: FastAPI) -> dict[tuple[str, str], Any]:
    """(method, path template) -> route, for every route the app answers (HEAD is GET's; a mount is GET)."""
    routes = list(iter_route_contexts(app.routes)) if iter_route_contexts is not None else app.routes
    walked: dict[tuple[str, str], Any] = {}
    for route in routes:
        for method in sorted(set(route.methods or {"GET"}) - {"HEAD"}):
            walked.setdefault((method, route.path), route)
    return walked


def _inventory() -> list[tuple[str, str, str]]:
    """(app, method, path template) of both apps as create_app builds them: the walks' parameters."""
    settings = {"auth_enabled": True, "auth_admin_key": new_key()}
    apps = {
        "gateway": create_gateway(GatewaySettings(**settings)),
        "inference": create_inference(InferenceSettings(**settings), Champions(), follow_registry=False),
    }
    return [(name, method, path) for name, app in apps.items() for method, path in walked_routes(app)]


INVENTORY = _inventory()
GUARDED = [route for route in INVENTORY if route[2] not in PUBLIC]


def _id(route: tuple[str, str, str]) -> str:
    return " ".join(route)


@pytest.fixture(scope="module")
def apis(tmp_path_factory, gru_model, processed) -> Iterator[dict[str, TestClient]]:
    """Both apps, lifespans entered. Inference serves the global champion with its latest rows (what the public
    example is drawn from) and tenant A's; tenant B has none."""
    tenants = {"tenant-a": (KEY_A, ["cell-a*"]), "tenant-b": (KEY_B, ["cell-b"])}
    auth = auth_fields(tmp_path_factory.mktemp("owasp"), ADMIN, tenants)
    champions = Champions()
    champions.install(gru_model, gru_model.window_from_processed(processed.test))
    champions.install(dataclasses.replace(gru_model, identity=dataclasses.replace(gru_model.identity, identifier=OURS)))
    apps = {
        "gateway": create_gateway(GatewaySettings(max_upload_bytes=UPLOAD_LIMIT, **auth)),
        "inference": create_inference(InferenceSettings(**auth), champions, follow_registry=False, inference=LIMITS),
    }
    with contextlib.ExitStack() as entered:
        yield {
            name: entered.enter_context(TestClient(app, raise_server_exceptions=False)) for name, app in apps.items()
        }


@pytest.fixture
def gateway(apis) -> TestClient:
    return apis["gateway"]


@pytest.fixture
def inference(apis) -> TestClient:
    return apis["inference"]


def _url(path: str) -> str:
    """The template with plausible values, and the identifier asked for in the query too (ignored where unread)."""
    filled = re.sub(r"{(\w+)(?::\w+)?}", lambda match: PLAUSIBLE.get(match.group(1), PLAUSIBLE_ID), path)
    return f"{filled}?identifier={OURS}"


def _schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _template(path: str) -> str:
    """A route's path as the OpenAPI document writes it (`{key:path}` is `{key}` there)."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", path)


def _body(app: FastAPI, method: str, path: str) -> dict[str, Any]:
    """A body the route's documented request body accepts far enough to reach its key and scope checks: every
    file field an empty file, or JSON naming tenant A's identifier with its required fields empty."""
    document = app.openapi()
    content = (
        document["paths"].get(_template(path), {}).get(method.lower(), {}).get("requestBody", {}).get("content", {})
    )
    if "multipart/form-data" in content:
        fields = _schema(document, content["multipart/form-data"]["schema"])["properties"]
        return {"files": {name: (f"{name}.csv", io.BytesIO(b""), "text/csv") for name in fields}}
    schema = _schema(document, content.get("application/json", {}).get("schema", {}))
    empty = {"array": [], "object": {}, "string": ""}
    body = {name: empty.get(schema["properties"][name].get("type"), "") for name in schema.get("required", [])}
    if "identifier" in schema.get("properties", {"identifier": None}):
        body["identifier"] = OURS
    return {"json": body}


def _example_rows(inference: TestClient) -> list[dict[str, Any]]:
    """The window the public document gives as /predict's example."""
    body = inference.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    return body["application/json"]["examples"]["rows"]["value"]["rows"]


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    extra = _body(client.app, method, path) if method != "GET" else {}
    return client.request(method, _url(path), headers=headers, follow_redirects=False, **extra)


# ------------------------------------------------------------------------------------------ API1, API2: the walks


def test_the_walks_see_every_route_of_both_apps():
    """So a change in how FastAPI keeps routes cannot make the walks check nothing."""
    walked = {(name, path) for name, _, path in INVENTORY}
    for expected in [
        ("gateway", "/datasets"),
        ("gateway", "/objects/{bucket}/{key:path}"),
        ("gateway", "/download/{bucket}/{key:path}"),
        ("gateway", "/runs/{config_hash}"),
        ("gateway", "/ui/identifiers/{identifier}/lineages/{config_hash}"),
        ("inference", "/predict"),
        ("inference", "/v2/models/{name}/infer"),
        ("inference", "/metrics"),
    ]:
        assert expected in walked, expected
    assert {path for _, _, path in INVENTORY} >= set(PUBLIC), "a public route that no longer exists: drop it"
    assert {(name, method, path) for name, method, path in INVENTORY} >= set(CALLER_FILTERED)


@pytest.mark.parametrize("route", GUARDED, ids=_id)
@pytest.mark.parametrize("headers", [{}, bearer("flts_not-a-key")], ids=["no key", "unknown key"])
def test_api2_broken_authentication_every_route_refuses_a_missing_or_unknown_key(apis, route, headers):
    name, method, path = route
    response = _call(apis[name], method, path, headers)
    if path == BROWSER_PAGES or path.startswith(f"{BROWSER_PAGES}/"):
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next=")
    else:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", [r for r in GUARDED if r not in CALLER_FILTERED], ids=_id)
def test_api1_broken_object_level_authorization_every_route_refuses_another_tenants_identifier(apis, route):
    """Tenant B asks for tenant A's identifier (in the path, the query or the body): 403, before anything is read."""
    name, method, path = route
    response = _call(apis[name], method, path, bearer(KEY_B))
    assert response.status_code == 403, response.text
    assert "tenant-b" in response.text and OURS in response.text


def test_api1_broken_object_level_authorization_listings_and_object_keys_stay_in_the_callers_scope(gateway, inference):
    def listed(key: str) -> set[str]:
        return {model["identifier"] for model in inference.get("/models", headers=bearer(key)).json()}

    assert listed(KEY_A) == {OURS} and listed(KEY_B) == set() and listed(ADMIN) == {"global", OURS}
    # A key that climbs out of tenant B's prefix into tenant A's is refused (malformed, or tenant A's), never read.
    for key in ("cell-b/../cell-a1/0123456789abcdef/train.csv", "cell-b/%2E%2E/cell-a1/x.csv", "cell-b//x.csv"):
        response = gateway.get(f"/download/datasets/{key}", headers=bearer(KEY_B))
        assert response.status_code in (400, 403), (key, response.text)
    # An identifier that is not a plain name is refused before it names a store prefix, the admin's included.
    for path in (f"/runs/{HASH}", "/datasets", "/lineages"):
        response = gateway.get(f"{path}?identifier=../{OURS}", headers=bearer(ADMIN))
        assert response.status_code == 422 and "identifier" in response.json()["detail"], (path, response.text)


def test_api2_broken_authentication_keys_come_from_the_headers_only_and_weak_ones_stop_the_service(gateway):
    """A key in a cookie (what a browser sends to any site's request) or in the query string (kept in logs and
    histories) is not a key to the API; only the status pages read the login page's cookie."""
    path = f"/lineages?identifier={OURS}"
    assert gateway.get(f"{path}&api_key={KEY_A}").status_code == 401
    assert gateway.get(path, headers={"Cookie": f"{ui.KEY_COOKIE}={KEY_A}"}).status_code == 401
    assert gateway.get(path, headers={"Authorization": f"Basic {KEY_A}"}).status_code == 401
    assert gateway.get(path, headers={"Authorization": f"Bearer {KEY_A[:-1]}"}).status_code == 401
    for weak in ("replace-with-a-long-random-secret", "admin", "k" * 31):
        with pytest.raises(ValidationError, match="AUTH_ADMIN_KEY"):
            GatewaySettings(auth_enabled=True, auth_admin_key=weak)


# ------------------------------------------------------------------------------------------ API3


def test_api3_broken_object_property_level_authorization_no_foreign_property_set_and_no_latest_times_published(
    gateway, inference, gru_model, processed
):
    # A body names what to forecast, never which model or version serves it (extra properties are refused).
    chosen = inference.post(
        "/predict", json={"identifier": OURS, "model_version": "1", "run_id": "x"}, headers=bearer(KEY_A)
    )
    assert chosen.status_code == 422 and "model_version" in chosen.text
    # `force` (train again) is a property only the admin may set.
    files = {"train": ("train.csv", io.BytesIO(b""), "text/csv")}
    forced = gateway.post(f"/datasets?identifier={OURS}&force=true", files=files, headers=bearer(KEY_A))
    assert forced.status_code == 403 and "force" in forced.json()["detail"]
    # The public document names the global model's columns (what a body must hold), not when its series was last
    # measured: the example window is drawn on the model's grid at a date of no series.
    document = inference.get("/openapi.json").text
    latest = gru_model.window_from_processed(processed.test)
    assert gru_model.measured_columns[0] in document
    assert not [stamp for stamp in iso_times(latest.nanoseconds) if stamp in document]
    assert not [day for day in {stamp[:10] for stamp in iso_times(latest.nanoseconds)} if day in document]
    rows = _example_rows(inference)
    assert rows[-1][gru_model.time_column].startswith("2000-01-01")
    assert {row[column] for row in rows for column in gru_model.measured_columns} == {0.0}
    assert inference.post("/predict", json={"rows": rows}, headers=bearer(ADMIN)).status_code == 200, "it still serves"


# ------------------------------------------------------------------------------------------ API4


def test_api4_unrestricted_resource_consumption_bodies_batches_horizons_and_pages_are_bounded(gateway, inference):
    too_big = inference.post("/predict", content=b"{" + b" " * LIMITS.max_request_bytes + b"}", headers=bearer(ADMIN))
    assert too_big.status_code == 413
    rows = _example_rows(inference)
    windows = inference.post(
        "/predict", json={"windows": [rows] * (LIMITS.max_batch_windows + 1)}, headers=bearer(ADMIN)
    )
    assert windows.status_code == 422 and str(LIMITS.max_batch_windows) in windows.text
    horizon = inference.post("/predict", json={"rows": rows, "inference_length": 10_000}, headers=bearer(ADMIN))
    assert horizon.status_code == 422 and "inference_length" in horizon.text
    assert gateway.get(f"/datasets?identifier={OURS}&limit=1001", headers=bearer(KEY_A)).status_code == 422
    upload = {"train": ("train.csv", io.BytesIO(b"x" * (UPLOAD_LIMIT * 2)), "text/csv")}
    assert gateway.post(f"/datasets?identifier={OURS}", files=upload, headers=bearer(KEY_A)).status_code == 413


# ------------------------------------------------------------------------------------------ API5


def test_api5_broken_function_level_authorization_admin_functions_need_the_admin_key_and_nothing_deletes(
    gateway, inference
):
    assert inference.post("/predict", json={}, headers=bearer(KEY_A)).status_code == 403  # global: admin only
    assert gateway.get("/datasets?identifier=global", headers=bearer(KEY_A)).status_code == 403
    assert gateway.get("/lineages", headers=bearer(KEY_A)).status_code == 403  # global by default
    files = {"train": ("train.csv", io.BytesIO(b""), "text/csv")}
    forced = gateway.post(f"/datasets?identifier={OURS}&force=true", files=files, headers=bearer(KEY_A))
    assert forced.status_code == 403 and "admin" in forced.json()["detail"]
    # No route deletes or replaces anything, for anyone: the APIs read, upload and forecast.
    assert {method for _, method, _ in INVENTORY} <= {"GET", "POST"}
    assert gateway.delete(f"/datasets?identifier={OURS}", headers=bearer(ADMIN)).status_code == 405


# ------------------------------------------------------------------------------------------ API6


def test_api6_sensitive_business_flows_a_tenant_cannot_make_the_pipeline_retrain_the_same_data(
    gateway, raw_data, monkeypatch
):
    """Training is the expensive flow. The same data again is the same lineage (config_hash), which preprocess does
    not process twice (tests/e2e/test_pipeline.py::test_the_same_dataset_again_does_not_retrain); only the admin
    may force it. (Each upload is bounded: API4; live rows have a rate per key: test_measurement_limits.py.)"""
    gw = gateway.app.state.gateway
    published: list[Any] = []

    def put_stream(uri: str, stream: Any, max_bytes: int | None = None) -> StoredObject:
        data = stream.read()
        return StoredObject(uri, hashlib.sha256(data).hexdigest(), len(data))

    monkeypatch.setattr(gw.store, "put_stream", put_stream)
    monkeypatch.setattr(gw.producer, "publish", lambda topic, message: published.append(message))
    content = raw_data[0].drop(columns=["identifier"], errors="ignore").head(400).to_csv(index=False).encode()

    def upload(query: str = "") -> Any:
        files = {"train": ("train.csv", io.BytesIO(content), "text/csv")}
        return gateway.post(f"/datasets?identifier={OURS}{query}", files=files, headers=bearer(KEY_A))

    first, again = upload(), upload()
    assert first.status_code == again.status_code == 202, first.text
    assert first.json()["config_hash"] == again.json()["config_hash"]
    assert [message.force for message in published] == [False, False]
    assert upload("&force=true").status_code == 403 and len(published) == 2


# ------------------------------------------------------------------------------------------ API7


URL_LIKE = re.compile(r"url|uri|endpoint|callback|webhook|host|href", re.I)


def _inputs(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, schema) of every parameter and every top-level body property of a document."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                yield parameter["name"], parameter.get("schema", {})
            for content in operation.get("requestBody", {}).get("content", {}).values():
                schema = _schema(document, content.get("schema", {}))
                yield from schema.get("properties", {}).items()


def test_api7_server_side_request_forgery_no_input_is_a_url_and_object_names_stay_in_the_store(gateway, inference):
    """Neither API fetches anything a caller names: no input is a URL, objects are named by bucket and key inside
    the store the service is configured with, and the login page sends a browser back to the status page only."""
    for client in (gateway, inference):
        document = client.get("/openapi.json").json()
        for name, schema in _inputs(document):
            assert not URL_LIKE.search(name) and schema.get("format") != "uri", name
    for path in ("/download/http:/evil.example/x", "/download/datasets/http://evil.example/x", "/objects/s3:/x/y"):
        response = gateway.get(path, headers=bearer(ADMIN))
        assert response.status_code in (400, 404), path
    page = gateway.get("/ui/login?next=https://evil.example/steal").text
    assert "evil.example" not in page


# ------------------------------------------------------------------------------------------ API8


def test_api8_security_misconfiguration_errors_docs_and_probes_name_nothing_internal(
    gateway, inference, monkeypatch, caplog
):
    settings = gateway.app.state.gateway.settings
    internal = [settings.s3_endpoint_url, settings.kafka_bootstrap_servers, settings.mlflow_tracking_uri, "s3://"]
    gw = gateway.app.state.gateway

    def store_down() -> None:
        raise ConnectionError(f"Could not connect to the endpoint URL: {settings.s3_endpoint_url}/datasets")

    monkeypatch.setattr(gw, "check_store", store_down)
    with caplog.at_level(logging.WARNING):
        ready = gateway.get("/readyz")
    assert ready.status_code == 503 and ready.json() == {"detail": "object store not reachable"}
    assert settings.s3_endpoint_url in caplog.text, "the detail goes to the log"

    def crash(identifier: str, **options: Any) -> list[Any]:
        raise RuntimeError(f"lineages unreadable at {settings.s3_endpoint_url} (/srv/app/gateway.py)")

    monkeypatch.setattr(gw, "lineages", crash)
    crashed = gateway.get(f"/lineages?identifier={OURS}", headers=bearer(KEY_A))
    assert crashed.status_code == 500 and crashed.text == "Internal Server Error"
    assert gateway.get("/no-such-route").json() == {"detail": "Not Found"}
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    for client in (gateway, inference):
        text = client.get("/openapi.json").text
        assert not [marker for marker in internal if marker in text]
        assert "access-control-allow-origin" not in client.options("/models", headers=preflight).headers
        assert (
            "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": "https://x.example"}).headers
        )
    with pytest.raises(ValidationError, match=r"placeholder of \.env\.example"):
        InferenceSettings(auth_enabled=True, auth_admin_key="replace-with-a-long-random-secret")


# ------------------------------------------------------------------------------------------ API9


@pytest.mark.parametrize("name", ["gateway", "inference"])
def test_api9_improper_inventory_management_every_route_is_documented_or_named_and_declares_its_keys(apis, name):
    client = apis[name]
    document = client.get("/openapi.json").json()
    documented = {
        (method.upper(), path): operation
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    answered = {(method, _template(path)) for method, path in walked_routes(client.app)}
    for method, path in answered:
        named = [prefix for prefix in UNDOCUMENTED if path == prefix or path.startswith(f"{prefix}/")]
        assert (method, path) in documented or named, f"{method} {path} is answered but not documented"
    for method, path in documented:
        assert (method, path) in answered, f"{method} {path} is documented but not answered"
        if path not in PUBLIC:
            schemes = {
                scheme for requirement in documented[(method, path)].get("security", []) for scheme in requirement
            }
            assert {"HTTPBearer", "APIKeyHeader"} <= schemes, f"{method} {path} does not declare the key schemes"
    assert document["info"]["version"]


# ------------------------------------------------------------------------------------------ API10


def test_api10_unsafe_consumption_of_apis_what_the_status_page_reads_from_kafka_and_the_store_is_escaped(
    gateway, monkeypatch
):
    """A dead letter's reason is whatever a consumer wrote (or a message's bytes put in it); eval's reasons come
    from the store. The page shows them as text, never as markup."""
    script = "<script>alert('from a dead letter')</script>"
    image = '<img src=x onerror="alert(1)">'
    letter = DeadLetter(
        source_topic="training-data", partition=0, offset=1, key=None, value_b64="", headers={},
        reason=script, consumer_group="flts-train-gru",
    )  # fmt: skip
    gw = gateway.app.state.gateway
    monkeypatch.setattr(ui, "latest_letters", lambda settings: (1, [Letter(0, 1, letter)]))
    monkeypatch.setattr(gw.store, "folders", lambda bucket, **options: [OURS])
    lineage = {"config_hash": HASH, "preprocessed_at": "2024-01-01T00:00:00", "outcome": "no_winner", "reason": image}
    monkeypatch.setattr(gw, "lineages", lambda identifier, **options: [lineage])
    page = gateway.get("/ui", headers=bearer(ADMIN))
    assert page.status_code == 200, page.text
    assert script not in page.text and "&lt;script&gt;" in page.text
    assert image not in page.text and "&lt;img" in page.text
