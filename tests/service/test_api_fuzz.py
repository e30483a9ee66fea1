"""schemathesis fuzzes inference's OpenAPI with auth on: with the admin's key, a tenant's key, or none, no
answer is a 5xx. (The gateway's routes need the object store: tests/integration/test_auth_stack.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from flts.auth import key_hash, new_key
from flts.config import InferenceSettings
from inference_container.champions import Champions
from inference_container.service import create_app

ADMIN, TENANT = new_key(), new_key()
CALLERS = {"admin": {"Authorization": f"Bearer {ADMIN}"}, "tenant": {"X-API-Key": TENANT}, "anonymous": {}}


@pytest.fixture(scope="module")
def inference_schema(gru_model, tmp_path_factory):
    keys = tmp_path_factory.mktemp("auth") / "api-keys.yaml"
    keys.write_text(f"principals: [{{name: tenant, sha256: {key_hash(TENANT)}, identifiers: [cell-*]}}]\n")
    champions = Champions()
    champions.install(gru_model)
    champions.install(
        dataclasses.replace(gru_model, identity=dataclasses.replace(gru_model.identity, identifier="cell-1"))
    )
    settings_ = InferenceSettings(auth_enabled=True, auth_keys_file=keys, auth_admin_key=ADMIN)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_, champions, follow_registry=False))


fuzzed = schemathesis.pytest.from_fixture("inference_schema")


@fuzzed.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_inference_requests_never_get_a_5xx(case):
    for headers in CALLERS.values():
        case.call_and_validate(headers=headers, checks=[not_a_server_error])
