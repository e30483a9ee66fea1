"""The Open Inference Protocol v2 routes (KServe-style clients) answer what /predict answers, on a real model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from flts.client import window_request
from flts.config import InferenceSettings
from inference_container.champions import Champions
from inference_container.service import create_app


@pytest.fixture
def client(gru_model) -> Iterator[TestClient]:
    champions = Champions()
    champions.install(gru_model)
    with TestClient(create_app(InferenceSettings(), champions, follow_registry=False)) as client:
        yield client


@pytest.fixture
def rows(raw_data) -> list[dict]:
    return window_request(raw_data[1].head(40), 10)["rows"]


def _infer_body(metadata: dict, rows: list[dict], **parameters) -> dict:
    columns = {spec["name"]: (spec["datatype"], [row[spec["name"]] for row in rows]) for spec in metadata["inputs"]}
    inputs = [
        {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}
        for name, (datatype, data) in columns.items()
    ]
    return {"id": "req-7", "inputs": inputs, "parameters": parameters}


def test_health_and_metadata_describe_the_champion_as_named_tensors(client, gru_model) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "flts-inference"
    assert client.get("/v2/models/global/ready").json() == {"name": "global", "ready": True}
    metadata = client.get("/v2/models/global").json()
    assert metadata["versions"] == [gru_model.identity.model_version]
    assert [t["name"] for t in metadata["inputs"]] == [gru_model.time_column, *gru_model.measured_columns]
    assert [t["name"] for t in metadata["outputs"]] == [gru_model.time_column, *gru_model.target_columns]
    assert client.get("/v2/models/nobody").status_code == 404
    assert "error" in client.get("/v2/models/nobody").json()


def test_infer_forecasts_what_predict_forecasts(client, rows) -> None:
    metadata = client.get("/v2/models/global").json()
    answer = client.post("/v2/models/global/infer", json=_infer_body(metadata, rows, inference_length=3))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "req-7" and body["model_name"] == "global"
    outputs = {tensor["name"]: tensor for tensor in body["outputs"]}
    answered = client.post("/predict", json={"rows": rows, "inference_length": 3}).json()
    predicted = answered["predictions"]
    assert answered["recursive_steps"] == body["parameters"]["recursive_steps"] == 2, "horizon 1, 3 steps asked"
    assert outputs["time"]["data"] == [step["ts"] for step in predicted]
    for name, tensor in outputs.items():
        assert tensor["shape"] == [3]
        if name != "time":
            assert tensor["datatype"] == "FP64"
            assert tensor["data"] == pytest.approx([step[name] for step in predicted])


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda body: body["inputs"].append({"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}), "'x'"),
        (lambda body: body["inputs"][1].update(shape=[3]), "shape [3]"),
        (lambda body: body["inputs"][1].update(datatype="INT8"), "INT8"),
        (lambda body: body["parameters"].update(inference_length="3"), "inference_length"),
        (lambda body: body["inputs"].pop(), "missing columns"),
    ],
)
def test_a_request_the_model_cannot_take_is_a_422_with_an_error_that_names_it(client, rows, edit, named) -> None:
    body = _infer_body(client.get("/v2/models/global").json(), rows)
    edit(body)
    answer = client.post("/v2/models/global/infer", json=body)
    assert answer.status_code == 422 and named in answer.json()["error"], answer.text
