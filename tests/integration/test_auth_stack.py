"""Tenants on the real stack with auth on: the gateway and inference as processes (real Kafka, MinIO, MLflow).

Tenant A uploads through the gateway; tenant B can neither read, list, upload to, force nor predict for
A's identifier, and finds nothing of A's in its own listings. Then schemathesis fuzzes the gateway (in
process, on the same stack) with the admin's key: no answer is a 5xx.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from integration_support import wait_until_healthy
from schemathesis.checks import not_a_server_error

from flts.auth import key_hash, new_key
from flts.data.generate import write_dataset
from flts.settings import GatewaySettings
from flts.stack import StackConfig
from gateway_container.service import create_app

pytestmark = pytest.mark.integration

ADMIN, KEY_A, KEY_B = new_key(), new_key(), new_key()
RUN = uuid.uuid4().hex[:8]
CELL_A, CELL_B = f"cell-a-{RUN}", f"cell-b-{RUN}"


# MLflow searches on a busy machine take seconds.
get = functools.partial(httpx.get, timeout=60)
post = functools.partial(httpx.post, timeout=120)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def auth_env(tmp_path_factory) -> dict[str, str]:
    keys = tmp_path_factory.mktemp("auth") / "api-keys.yaml"
    principals = [
        {"name": "tenant-a", "sha256": key_hash(KEY_A), "identifiers": [CELL_A]},
        {"name": "tenant-b", "sha256": key_hash(KEY_B), "identifiers": [CELL_B]},
    ]
    keys.write_text(yaml.safe_dump({"principals": principals}))
    return {"AUTH_ENABLED": "true", "AUTH_KEYS_FILE": str(keys), "AUTH_ADMIN_KEY": ADMIN}


@pytest.fixture(scope="module")
def apis(stack_config: StackConfig, stack_env, auth_env, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The gateway and inference, each `python -m <container>.service` with auth on (ports beside the stack's)."""
    logs = tmp_path_factory.mktemp("logs")
    urls, processes = {}, []
    for name, port in (("gateway", stack_config.gateway_port + 20), ("inference", stack_config.inference_port + 20)):
        env = {**os.environ, **stack_env, **auth_env, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port)}
        log = (logs / f"{name}.log").open("w")
        processes.append(
            subprocess.Popen([sys.executable, "-m", f"{name}_container.service"], env=env, stdout=log, stderr=log)
        )
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        for (name, url), process in zip(urls.items(), processes, strict=True):
            wait_until_healthy(name, url, process, logs / f"{name}.log")
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def upload_of_a(apis, tmp_path_factory) -> dict:
    train, _ = write_dataset(tmp_path_factory.mktemp("data"), train_rows=1_500, test_rows=300, seed=9)
    with train.open("rb") as handle:
        response = post(
            f"{apis['gateway']}/datasets",
            params={"identifier": CELL_A},
            files={"train": ("train.csv", handle, "text/csv")},
            headers=bearer(KEY_A),
        )
    assert response.status_code == 202, response.text
    return {**response.json(), "bytes": train.read_bytes()}


def test_tenant_a_reads_its_own_upload(apis, upload_of_a):
    key = upload_of_a["train"]["uri"].removeprefix("s3://")
    own = get(f"{apis['gateway']}/objects/{key}", headers=bearer(KEY_A))
    assert own.status_code == 200 and own.content == upload_of_a["bytes"]
    listed = get(f"{apis['gateway']}/datasets", params={"identifier": CELL_A}, headers=bearer(KEY_A))
    assert [item["key"] for item in listed.json()["items"]] == [key.removeprefix("datasets/")]


def test_tenant_b_cannot_read_list_upload_force_or_predict_for_tenant_a(apis, upload_of_a):
    gateway, inference, b = apis["gateway"], apis["inference"], bearer(KEY_B)
    key = upload_of_a["train"]["uri"].removeprefix("s3://")
    assert get(f"{gateway}/objects/{key}", headers=b).status_code == 403
    assert get(f"{gateway}/datasets", params={"identifier": CELL_A}, headers=b).status_code == 403
    assert get(f"{gateway}/lineages", params={"identifier": CELL_A}, headers=b).status_code == 403
    status = f"{gateway}/runs/{upload_of_a['config_hash']}"
    assert get(status, params={"identifier": CELL_A}, headers=b).status_code == 403
    files = {"train": ("train.csv", io.BytesIO(upload_of_a["bytes"]), "text/csv")}
    assert post(f"{gateway}/datasets", params={"identifier": CELL_A}, files=files, headers=b).status_code == 403
    force = {"identifier": CELL_B, "force": "true"}
    files = {"train": ("train.csv", io.BytesIO(upload_of_a["bytes"]), "text/csv")}
    assert post(f"{gateway}/datasets", params=force, files=files, headers=b).status_code == 403
    predict = post(f"{inference}/predict", json={"identifier": CELL_A}, headers=b)
    assert predict.status_code == 403
    assert get(f"{inference}/model-info", params={"identifier": CELL_A}, headers=b).status_code == 403


def test_tenant_b_sees_nothing_of_tenant_a_in_its_own_listings_and_answers(apis, upload_of_a):
    gateway, inference, b = apis["gateway"], apis["inference"], bearer(KEY_B)
    own = get(f"{gateway}/datasets", params={"identifier": CELL_B}, headers=b).json()
    assert own["items"] == []
    # A config_hash of A's asked under B's identifier: nothing of A's shows.
    status = get(f"{gateway}/runs/{upload_of_a['config_hash']}", params={"identifier": CELL_B}, headers=b)
    assert status.status_code == 404 and CELL_A not in status.text
    assert all(m["identifier"] == CELL_B for m in get(f"{inference}/models", headers=b).json())
    missing = post(f"{inference}/predict", json={"identifier": CELL_B}, headers=b)
    assert missing.status_code in (404, 503) and CELL_A not in missing.text


def test_without_a_key_every_route_is_401(apis, upload_of_a):
    gateway, inference = apis["gateway"], apis["inference"]
    key = upload_of_a["train"]["uri"].removeprefix("s3://")
    for url in (f"{gateway}/objects/{key}", f"{gateway}/datasets?identifier={CELL_A}", f"{inference}/models"):
        assert get(url).status_code == 401
    assert post(f"{inference}/predict", json={}).status_code == 401
    assert get(f"{inference}/readyz").status_code in (200, 503)  # the probe stays open


def test_the_admin_reads_across_tenants(apis, upload_of_a):
    listed = get(f"{apis['gateway']}/datasets", params={"identifier": CELL_A}, headers=bearer(ADMIN))
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


# ------------------------------------------------------------------------------------------------ fuzzing


@pytest.fixture(scope="module")
def gateway_schema(stack_env, auth_env, monkeypatch_module):
    for name, value in {**stack_env, **auth_env}.items():
        monkeypatch_module.setenv(name, value)
    # An event stream (GET /forecasts) lasts a second, so a fuzzed one is answered in a second, and so is a long poll.
    settings = GatewaySettings(max_upload_bytes=200_000, forecast_stream_seconds=1.0)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


fuzzed = schemathesis.pytest.from_fixture("gateway_schema")


@fuzzed.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_gateway_requests_with_the_admin_key_never_get_a_5xx(case):
    case.call_and_validate(headers=bearer(ADMIN), checks=[not_a_server_error])


def test_the_fuzzer_reaches_every_gateway_route(gateway_schema):
    paths = {operation.ok().path for operation in gateway_schema.get_all_operations()}
    assert {
        "/datasets",
        "/lineages",
        "/runs/{config_hash}",
        "/objects/{bucket}/{key}",
        "/download/{bucket}/{key}",
        "/score/{claim_id}",
        "/forecasts",
    } <= paths
