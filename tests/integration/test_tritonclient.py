"""tritonclient (NVIDIA's Open Inference Protocol client), unchanged, against inference on the real stack.

Inference runs as a process (`python -m inference_container.service`, auth on, then off) on the real Kafka, MinIO
and MLflow; its champions are the GRU the service tests serve (tests/serving_models.py), logged to the real
MLflow and registered as the champion of `global` and of a tenant's identifier, so the replica downloads them as
it downloads any champion. tritonclient in both of its modes (binary tensor data, its default, and
binary_data=False on every input and output) forecasts what /predict forecasts; with auth on, no key or a wrong
one is its 401 and another tenant's key its 403, as InferenceServerExceptions carrying the server's message.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from oip_clients import check_triton_forecast, check_triton_refusals

from flts.auth import key_hash, new_key
from flts.client import window_request
from flts.kafka import ensure_topics
from flts.settings import InferenceSettings
from flts.stack import StackConfig
from flts.stack.procs import wait_for
from flts.tracking import TAG_CONFIG_HASH, TAG_MODEL_TYPE, Tracker

pytestmark = pytest.mark.integration

ADMIN, TENANT = new_key(), new_key()
RUN = uuid.uuid4().hex[:8]
CELL = f"cell-oip-{RUN}"
CONFIG_HASH = "d" * 64


@pytest.fixture(scope="module")
def registry_env(stack_env, gru_bundle) -> dict[str, str]:
    """Fresh topics, experiment and registry prefix (the env of the replicas), with the GRU as the champion of
    `global` and of CELL in that registry."""
    fields = InferenceSettings.model_fields
    fresh = {name: f"{field.default}-{RUN}" for name, field in fields.items() if name.startswith("topic_")}
    fresh |= {"mlflow_experiment": f"it-oip-{RUN}", "registered_model_prefix": f"itoip{RUN}"}
    known = {key.lower(): value for key, value in stack_env.items() if key.lower() in fields}
    settings = InferenceSettings(**{**known, **fresh})
    ensure_topics(settings, partitions=1)
    tracker = Tracker(settings)
    run_id = tracker.start_run(CONFIG_HASH, "GRU", "global", "dataset")
    tracker.log_model(run_id, gru_bundle)
    for identifier in ("global", CELL):
        version = tracker.register(run_id, identifier, {TAG_CONFIG_HASH: CONFIG_HASH, TAG_MODEL_TYPE: "GRU"})
        tracker.set_champion(identifier, version)
    return {**stack_env, **{name.upper(): value for name, value in fresh.items()}}


@pytest.fixture(scope="module", params=["auth on", "auth off"])
def replica(request, stack_config: StackConfig, registry_env, tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """(host:port of a ready replica, the headers of a key that may use every champion)."""
    auth_on = request.param == "auth on"
    state = tmp_path_factory.mktemp("replica")
    keys = state / "api-keys.yaml"
    keys.write_text(f"principals: [{{name: tenant, sha256: {key_hash(TENANT)}, identifiers: [{CELL}]}}]\n")
    port = stack_config.inference_port + (30 if auth_on else 31)
    env = {
        **os.environ,
        **registry_env,
        "AUTH_ENABLED": str(auth_on).lower(),
        "AUTH_KEYS_FILE": str(keys),
        "AUTH_ADMIN_KEY": ADMIN,
        "CONSUMER_GROUP": f"it-oip-{RUN}-{port}",
        "MODEL_CACHE_DIR": str(state / "models"),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
    }
    log = state / "inference.log"
    with log.open("wb") as output:
        command = [sys.executable, "-m", "inference_container.service"]
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: process.poll() is not None or _ready(f"http://127.0.0.1:{port}/readyz"), timeout=180)
        assert _ready(f"http://127.0.0.1:{port}/readyz"), f"inference is not ready: {log.read_text()[-3000:]}"
        yield f"127.0.0.1:{port}", ({"Authorization": f"Bearer {ADMIN}"} if auth_on else {})
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


@pytest.fixture(scope="module")
def rows(raw_data) -> list[dict]:
    return window_request(raw_data[1].head(40), 10)["rows"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_forecasts_what_predict_forecasts_from_a_champion_of_the_registry(replica, rows, binary):
    url, headers = replica
    check_triton_forecast(url, headers, "global", rows, binary)


@pytest.mark.parametrize("replica", ["auth on"], indirect=True)
def test_tritonclient_without_a_valid_key_gets_401_and_with_another_tenant_s_key_403(replica, rows):
    url, admin = replica
    tenant = {"Authorization": f"Bearer {TENANT}"}
    refusals = {401: [{}, {"Authorization": "Bearer wrong"}], 403: [tenant]}
    check_triton_refusals(url, "global", rows, refusals, allowed=admin)
    for binary in (True, False):
        check_triton_forecast(url, tenant, CELL, rows, binary)
