"""The Open Inference Protocol v2 routes (KServe-style clients) answer what /predict answers, on a real model.

JSON bodies and Triton's binary tensor data extension (built and read by hand here), every datatype a column
may be sent as, each way a body can be unreadable or unservable (a 4xx with {"error": ...}, never a 500), and
NVIDIA's tritonclient itself against the app served by uvicorn on loopback, with auth off and on (the real
stack's run of the same checks: tests/integration/test_tritonclient.py)."""

from __future__ import annotations

import dataclasses
import json
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from oip_clients import check_triton_forecast, check_triton_refusals
from tritonclient.utils import triton_to_np_dtype

from flts.auth import key_hash, new_key
from flts.client import window_request
from flts.config import InferenceConfig
from flts.settings import InferenceSettings
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


# --- Triton's binary tensor data extension, built and read here by hand (tritonclient itself: further below) ---

HEADER_LENGTH = "Inference-Header-Content-Length"


def _strings(values: list[str]) -> bytes:
    """BYTES elements as the extension sends them: a 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(raw)) + raw for raw in (value.encode() for value in values))


def _framed(request: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(request).encode()
    return header + b"".join(blobs), {HEADER_LENGTH: str(len(header))}


def _binary_body(metadata: dict, rows: list[dict], datatype: str = "FP64", **parameters) -> tuple[bytes, dict]:
    """Every input binary: the time column as BYTES, the measured columns as `datatype` (cast as numpy casts)."""
    inputs, blobs = [], []
    for spec in metadata["inputs"]:
        values = [row[spec["name"]] for row in rows]
        if spec["datatype"] == "BYTES":
            blobs.append(_strings(values))
            kind = "BYTES"
        else:
            blobs.append(_cast(values, datatype).tobytes())
            kind = datatype
        inputs.append(
            {
                "name": spec["name"],
                "datatype": kind,
                "shape": [len(rows)],
                "parameters": {"binary_data_size": len(blobs[-1])},
            }
        )
    return _framed({"inputs": inputs, "parameters": parameters}, blobs)


def _cast(values: list[float], datatype: str) -> np.ndarray:
    """The values as a little-endian `datatype` array (integers rounded and clipped to the type's range)."""
    dtype = np.dtype(triton_to_np_dtype(datatype)).newbyteorder("<")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    return np.asarray(values, dtype)


def _outputs(response) -> dict[str, tuple[str, list]]:
    """{name: (datatype, elements)} of an answer, JSON or binary (read without tritonclient)."""
    length = response.headers.get(HEADER_LENGTH)
    header = json.loads(response.content[: int(length)] if length else response.content)
    blobs, found = memoryview(response.content[int(length) :] if length else b""), {}
    for tensor in header["outputs"]:
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            found[tensor["name"]] = (tensor["datatype"], tensor["data"])
            continue
        raw, blobs = bytes(blobs[:size]), blobs[size:]
        if tensor["datatype"] == "BYTES":
            elements, offset = [], 0
            while offset < len(raw):
                (n,) = struct.unpack_from("<I", raw, offset)
                elements.append(raw[offset + 4 : offset + 4 + n].decode())
                offset += 4 + n
        else:
            elements = np.frombuffer(raw, np.dtype(triton_to_np_dtype(tensor["datatype"])).newbyteorder("<")).tolist()
        assert len(elements) == tensor["shape"][0], tensor
        found[tensor["name"]] = (tensor["datatype"], elements)
    assert not blobs, "bytes after the last binary output"
    return found


@pytest.fixture
def metadata(client) -> dict:
    return client.get("/v2/models/global").json()


def test_a_binary_request_is_answered_in_binary_with_what_its_json_twin_gets(client, metadata, rows) -> None:
    content, headers = _binary_body(metadata, rows, inference_length=3, binary_data_output=True)
    answer = client.post("/v2/models/global/infer", content=content, headers=headers)  # no Content-Type, as Triton
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    json_answer = client.post(
        "/v2/models/global/infer", content=json.dumps(_infer_body(metadata, rows, inference_length=3))
    )
    assert json_answer.status_code == 200 and HEADER_LENGTH not in json_answer.headers
    assert json_answer.headers["content-type"] == "application/json"
    assert _outputs(answer) == _outputs(json_answer)
    header = json.loads(answer.content[: int(answer.headers[HEADER_LENGTH])])
    assert all("data" not in tensor and tensor["parameters"]["binary_data_size"] > 0 for tensor in header["outputs"])
    assert header["parameters"] == {"recursive_steps": 2}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(
    "datatype", ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
)
def test_every_numeric_datatype_is_read_as_the_numbers_it_holds(client, metadata, rows, datatype, binary) -> None:
    measured = [spec["name"] for spec in metadata["inputs"][1:]]
    cast = {name: _cast([row[name] for row in rows], datatype).tolist() for name in measured}
    if binary:
        content, headers = _binary_body(metadata, rows, datatype)
    else:
        body = _infer_body(metadata, rows)
        for tensor in body["inputs"][1:]:
            tensor.update(datatype=datatype, data=cast[tensor["name"]])
        content, headers = json.dumps(body).encode(), {"Content-Type": "text/plain"}  # a content type is not read
    answer = client.post("/v2/models/global/infer", content=content, headers=headers)
    assert answer.status_code == 200, answer.text
    same_rows = [{**row, **{name: float(cast[name][i]) for name in measured}} for i, row in enumerate(rows)]
    predicted = client.post("/predict", json={"rows": same_rows}).json()["predictions"]
    for name, (_, elements) in _outputs(answer).items():
        expected = [step["ts" if name == "time" else name] for step in predicted]
        assert elements == (expected if name == "time" else pytest.approx(expected)), name


def test_the_outputs_asked_for_come_in_the_datatype_and_form_asked_for(client, metadata, rows) -> None:
    targets = [spec["name"] for spec in metadata["outputs"][1:]]
    body = _infer_body(metadata, rows, inference_length=2, binary_data_output=True)
    body["outputs"] = [
        {"name": "time", "parameters": {"binary_data": False}},
        {"name": targets[0], "parameters": {"datatype": "FP32"}},  # binary, as binary_data_output says
        {"name": targets[1], "parameters": {"datatype": "FP16", "binary_data": False}},
    ]
    answer = client.post("/v2/models/global/infer", json=body)
    assert answer.status_code == 200, answer.text
    header = json.loads(answer.content[: int(answer.headers[HEADER_LENGTH])])
    assert [(t["name"], t["datatype"], "data" in t) for t in header["outputs"]] == [
        ("time", "BYTES", True),
        (targets[0], "FP32", False),
        (targets[1], "FP16", True),
    ]
    full = _outputs(client.post("/v2/models/global/infer", json=_infer_body(metadata, rows, inference_length=2)))
    outputs = _outputs(answer)
    assert outputs["time"] == full["time"]
    assert outputs[targets[0]][1] == pytest.approx(full[targets[0]][1], rel=1e-6)
    assert outputs[targets[1]][1] == pytest.approx(full[targets[1]][1], rel=1e-3)


def _edit(request: dict, blobs: list[bytes], change) -> tuple[bytes, dict]:
    change(request, blobs)
    return _framed(request, blobs)


def _binary_parts(metadata: dict, rows: list[dict]) -> tuple[dict, list[bytes]]:
    content, headers = _binary_body(metadata, rows)
    length = int(headers[HEADER_LENGTH])
    request = json.loads(content[:length])
    blobs, offset = [], length
    for tensor in request["inputs"]:
        size = tensor["parameters"]["binary_data_size"]
        blobs.append(content[offset : offset + size])
        offset += size
    return request, blobs


def _set(index: int, **fields):
    return lambda request, blobs: request["inputs"][index].update(fields)


def _params(index: int, **parameters):
    return lambda request, blobs: request["inputs"][index]["parameters"].update(parameters)


def _blob(index: int, raw: bytes):
    def change(request, blobs):
        blobs[index] = raw
        request["inputs"][index]["parameters"]["binary_data_size"] = len(raw)

    return change


def _both(*changes):
    return lambda request, blobs: [change(request, blobs) for change in changes]


ROWS = 10  # rows in the `rows` fixture
MALFORMED = {
    # the framing
    "header length not a number": (lambda m, r: (b"{}", {HEADER_LENGTH: "ten"}), 400, HEADER_LENGTH),
    "header length negative": (lambda m, r: (b"{}", {HEADER_LENGTH: "-2"}), 400, HEADER_LENGTH),
    "header length past the body": (lambda m, r: (b"{}", {HEADER_LENGTH: "3"}), 400, "holds 2 bytes"),
    "header not JSON": (lambda m, r: (b"\xff\xfe{", {}), 400, "not an inference request"),
    "header not an object": (lambda m, r: (b"[1, 2]", {}), 400, "not an inference request"),
    "no inputs": (lambda m, r: (b'{"id": "x"}', {}), 400, "inputs"),
    "inputs not tensors": (lambda m, r: (b'{"inputs": [{"name": 3}]}', {}), 400, "inputs.0"),
    "gzip": (lambda m, r: (b"\x1f\x8b", {"Content-Encoding": "gzip"}), 400, "Content-Encoding"),
    "binary size past the end": (
        lambda m, r: _edit(*_binary_parts(m, r), _params(-1, binary_data_size=ROWS * 8 + 1)),
        400,
        "runs past",
    ),
    "binary size too small": (
        lambda m, r: _edit(*_binary_parts(m, r), _params(2, binary_data_size=ROWS * 8 - 8)),
        400,
        "after the last binary input",
    ),
    "binary size not a number": (
        lambda m, r: _edit(*_binary_parts(m, r), _params(1, binary_data_size="80")),
        400,
        "binary_data_size",
    ),
    "binary size negative": (
        lambda m, r: _edit(*_binary_parts(m, r), _params(1, binary_data_size=-8)),
        400,
        "binary_data_size",
    ),
    "binary size true": (
        lambda m, r: _edit(*_binary_parts(m, r), _params(1, binary_data_size=True)),
        400,
        "binary_data_size",
    ),
    "binary numbers cut short": (lambda m, r: _edit(*_binary_parts(m, r), _blob(1, b"\0" * 79)), 400, "whole FP64"),
    "BYTES length prefix cut off": (
        lambda m, r: _edit(*_binary_parts(m, r), _blob(0, _strings(["2024-01-03T03:12:00"]) + b"\1\0")),
        400,
        "cut-off length prefix",
    ),
    "BYTES element longer than the data": (
        lambda m, r: _edit(*_binary_parts(m, r), _blob(0, struct.pack("<I", 99) + b"2024")),
        400,
        "says 99 bytes",
    ),
    "BYTES not UTF-8": (
        lambda m, r: _edit(*_binary_parts(m, r), _blob(0, struct.pack("<I", 2) + b"\xff\xfe")),
        400,
        "not UTF-8",
    ),
    "both data and binary": (lambda m, r: _edit(*_binary_parts(m, r), _set(1, data=[1.0] * ROWS)), 400, "both"),
    "neither data nor binary": (
        lambda m, r: _framed({"inputs": [{"name": "time", "datatype": "BYTES", "shape": [1]}]}, []),
        400,
        "neither",
    ),
    # what the model cannot take
    "BOOL": (lambda m, r: _edit(*_binary_parts(m, r), _set(1, datatype="BOOL")), 422, "BOOL"),
    "BF16": (lambda m, r: _edit(*_binary_parts(m, r), _set(1, datatype="BF16")), 422, "BF16"),
    "lower case datatype": (lambda m, r: _edit(*_binary_parts(m, r), _set(1, datatype="fp64")), 422, "fp64"),
    "time as numbers": (
        lambda m, r: _edit(
            *_binary_parts(m, r),
            _both(_blob(0, np.arange(ROWS, dtype="<i8").tobytes()), _set(0, datatype="INT64")),
        ),
        422,
        "expected one of BYTES",
    ),
    "a column as BYTES": (
        lambda m, r: _edit(*_binary_parts(m, r), _both(_blob(1, _strings(["1.5"] * ROWS)), _set(1, datatype="BYTES"))),
        422,
        "expected one of FP16",
    ),
    "binary shape off": (lambda m, r: _edit(*_binary_parts(m, r), _set(1, shape=[ROWS + 1])), 422, "shape"),
    "two dimensions": (lambda m, r: _edit(*_binary_parts(m, r), _set(1, shape=[1, ROWS])), 422, "shape"),
    "binary time not a time": (
        lambda m, r: _edit(*_binary_parts(m, r), _blob(0, _strings(["yesterday"] * ROWS))),
        422,
        "ISO-8601",
    ),
    "an input twice": (
        lambda m, r: _edit(*_binary_parts(m, r), lambda q, b: (q["inputs"].append(q["inputs"][1]), b.append(b[1]))),
        422,
        "twice",
    ),
    "JSON INT8 out of range": (
        lambda m, r: _framed(_with(_infer_body(m, r), 1, datatype="INT8", data=[128] * ROWS), []),
        422,
        "128 is not a INT8",
    ),
    "JSON UINT8 negative": (
        lambda m, r: _framed(_with(_infer_body(m, r), 1, datatype="UINT8", data=[-1] * ROWS), []),
        422,
        "-1 is not a UINT8",
    ),
    "JSON INT32 fraction": (
        lambda m, r: _framed(_with(_infer_body(m, r), 1, datatype="INT32", data=[1.5] * ROWS), []),
        422,
        "1.5 is not a INT32",
    ),
    "binary_data_output not a flag": (
        lambda m, r: _framed({**_infer_body(m, r), "parameters": {"binary_data_output": "yes"}}, []),
        422,
        "binary_data_output",
    ),
    "an output's binary_data not a flag": (
        lambda m, r: _framed(
            {**_infer_body(m, r), "outputs": [{"name": "time", "parameters": {"binary_data": 1}}]}, []
        ),
        422,
        "binary_data",
    ),
    "an unknown output": (lambda m, r: _framed({**_infer_body(m, r), "outputs": [{"name": "x"}]}, []), 422, "'x'"),
    "forecasts as integers": (
        lambda m, r: _framed(
            {**_infer_body(m, r), "outputs": [{"name": "down", "parameters": {"datatype": "INT32"}}]}, []
        ),
        422,
        "INT32",
    ),
    "time as FP64": (
        lambda m, r: _framed(
            {**_infer_body(m, r), "outputs": [{"name": "time", "parameters": {"datatype": "FP64"}}]}, []
        ),
        422,
        "BYTES",
    ),
    "an unhashable output datatype": (
        lambda m, r: _framed({**_infer_body(m, r), "outputs": [{"name": "down", "parameters": {"datatype": {}}}]}, []),
        422,
        "{}",
    ),
}


def _with(body: dict, index: int, **fields) -> dict:
    body["inputs"][index].update(fields)
    return body


@pytest.mark.parametrize(("build", "status", "named"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_body_that_cannot_be_read_or_served_is_a_4xx_with_an_error_that_names_why(
    client, metadata, rows, build, status, named
) -> None:
    content, headers = build(metadata, rows)
    answer = client.post("/v2/models/global/infer", content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and named in answer.json()["error"], answer.text


def test_errors_answered_outside_the_routes_are_oip_errors_too(gru_model, metadata, rows) -> None:
    """The body limit's 413, FastAPI's 404 and 405 under /v2 are {"error": ...}; /predict's keep their shape."""
    champions = Champions()
    champions.install(gru_model)
    limits = InferenceConfig(max_request_bytes=2048)
    with TestClient(create_app(InferenceSettings(), champions, follow_registry=False, inference=limits)) as small:
        content, headers = _binary_body(metadata, rows * 4)
        assert len(content) > 2048
        too_large = small.post("/v2/models/global/infer", content=content, headers=headers)
        assert too_large.status_code == 413 and "2048" in too_large.json()["error"]
        for answer, status in (
            (small.get("/v2/nothing/here"), 404),
            (small.get("/v2/models/global/infer"), 405),
            (small.get("/v2/models/nobody/ready"), 404),
        ):
            assert answer.status_code == status and list(answer.json()) == ["error"], answer.text
        assert "detail" in small.post("/predict", content=b"{").json()


# --- tritonclient itself, unchanged, against the app served by uvicorn on loopback ---

ADMIN, TENANT = new_key(), new_key()


@pytest.fixture(scope="module", params=["auth off", "auth on"])
def served(request, gru_model, tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """(host:port, the headers of a key that may use every champion); with auth on, a tenant key for cell-*."""
    champions = Champions()
    champions.install(gru_model)
    champions.install(
        dataclasses.replace(gru_model, identity=dataclasses.replace(gru_model.identity, identifier="cell-1"))
    )
    if request.param == "auth on":
        keys = tmp_path_factory.mktemp("auth") / "api-keys.yaml"
        keys.write_text(f"principals: [{{name: tenant, sha256: {key_hash(TENANT)}, identifiers: [cell-*]}}]\n")
        settings = InferenceSettings(auth_enabled=True, auth_keys_file=keys, auth_admin_key=ADMIN)
    else:
        settings = InferenceSettings(auth_enabled=False)
    app = create_app(settings, champions, follow_registry=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="oip-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}", ({"Authorization": f"Bearer {ADMIN}"} if request.param == "auth on" else {})
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_forecasts_what_predict_forecasts(served, rows, binary) -> None:
    url, headers = served
    check_triton_forecast(url, headers, "global", rows, binary)


@pytest.mark.parametrize("served", ["auth on"], indirect=True)
def test_tritonclient_without_a_valid_key_gets_401_and_with_another_tenant_s_key_403(served, rows) -> None:
    url, _ = served
    tenant = {"Authorization": f"Bearer {TENANT}"}
    refusals = {401: [{}, {"Authorization": "Bearer wrong"}], 403: [tenant]}
    check_triton_refusals(url, "global", rows, refusals, allowed={"Authorization": f"Bearer {ADMIN}"})
    check_triton_forecast(url, tenant, "cell-1", rows, binary=True)
