"""schemathesis fuzzes inference's OpenAPI with auth on: with the admin's key, a tenant's key, or none, no
answer is a 5xx; and the published /predict body is the real one, so bodies built from it reach the model.
(The gateway's routes need the object store: tests/integration/test_auth_stack.py.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from flts.auth import key_hash, new_key
from flts.config import InferenceConfig
from flts.settings import InferenceSettings
from inference_container.champions import Champions
from inference_container.service import create_app

ADMIN, TENANT = new_key(), new_key()
LIMITS = InferenceConfig(max_batch_windows=8)  # not the default: the published limit is the configured one
CALLERS = {"admin": {"Authorization": f"Bearer {ADMIN}"}, "tenant": {"X-API-Key": TENANT}, "anonymous": {}}


@pytest.fixture(scope="module")
def inference_app(gru_model, processed, tmp_path_factory):
    """Auth on; the global champion with its latest rows (what `{}` forecasts from), and a tenant's champion."""
    keys = tmp_path_factory.mktemp("auth") / "api-keys.yaml"
    keys.write_text(f"principals: [{{name: tenant, sha256: {key_hash(TENANT)}, identifiers: [cell-*]}}]\n")
    champions = Champions()
    champions.install(gru_model, gru_model.window_from_processed(processed.test))
    champions.install(
        dataclasses.replace(gru_model, identity=dataclasses.replace(gru_model.identity, identifier="cell-1"))
    )
    settings_ = InferenceSettings(auth_enabled=True, auth_keys_file=keys, auth_admin_key=ADMIN)
    return create_app(settings_, champions, follow_registry=False, inference=LIMITS)


@pytest.fixture(scope="module")
def inference_schema(inference_app):
    return schemathesis.openapi.from_asgi("/openapi.json", inference_app)


fuzzed = schemathesis.pytest.from_fixture("inference_schema")


@fuzzed.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_inference_requests_never_get_a_5xx(case):
    for headers in CALLERS.values():
        case.call_and_validate(headers=headers, checks=[not_a_server_error])


def _predict_body(app) -> dict[str, Any]:
    with TestClient(app) as client:
        return client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"][
            "application/json"
        ]


def test_the_published_predict_body_has_the_champions_columns_rows_and_limits(inference_app, gru_model):
    body = _predict_body(inference_app)
    fields = body["schema"]["properties"]
    window = fields["rows"]["anyOf"][0]
    assert window["minItems"] == gru_model.rows_needed
    assert window["items"]["required"] == [gru_model.time_column, *gru_model.measured_columns]
    assert fields["windows"]["anyOf"][0]["maxItems"] == LIMITS.max_batch_windows
    assert fields["inference_length"]["anyOf"][0]["maximum"] == gru_model.max_inference_length
    assert sorted(fields["data"]["anyOf"][0]["required"]) == sorted(gru_model.measured_columns)
    assert "cell-1" not in str(body)


def test_every_published_predict_example_is_answered(inference_app):
    body = _predict_body(inference_app)
    with TestClient(inference_app) as client:
        for name, example in body["examples"].items():
            response = client.post("/predict", json=example["value"], headers=CALLERS["admin"])
            assert response.status_code == 200, (name, response.text)


def test_bodies_generated_from_the_published_schema_reach_the_model(inference_schema, inference_app):
    """Not only refusals: a good share of schema-conforming bodies is forecast (the rest are 404s for unknown
    identifiers and 422s that name the problem, e.g. rows out of order or off the grid, which JSON Schema cannot
    say)."""
    statuses: list[int] = []
    operation = inference_schema["/predict"]["POST"]

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def send(case) -> None:
        statuses.append(case.call(headers=CALLERS["admin"]).status_code)

    send()
    assert all(status < 500 for status in statuses)
    assert statuses.count(200) >= len(statuses) // 4, statuses
