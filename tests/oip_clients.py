"""tritonclient (NVIDIA's Open Inference Protocol client), used as its users use it, against a served inference
API: tests/service/test_open_inference_protocol.py (the app on loopback) and tests/integration/test_tritonclient.py
(a process on the real stack) share these checks."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


def triton_inputs(metadata: dict, rows: list[dict], binary: bool) -> list[triton.InferInput]:
    """One InferInput per column, as a tritonclient user writes them (times as BYTES, numbers as FP64)."""
    inputs = []
    for spec in metadata["inputs"]:
        values = [row[spec["name"]] for row in rows]
        tensor = triton.InferInput(spec["name"], [len(values)], spec["datatype"])
        if spec["datatype"] == "BYTES":
            tensor.set_data_from_numpy(np.array([value.encode() for value in values], dtype=object), binary)
        else:
            tensor.set_data_from_numpy(np.array(values, dtype=np.float64), binary)
        inputs.append(tensor)
    return inputs


def check_triton_forecast(url: str, headers: dict, identifier: str, rows: list[dict], binary: bool) -> None:
    """tritonclient's probes, model metadata and infer (binary: its defaults; else binary_data=False on every input
    and output) against `url`; the forecast is /predict's."""
    client = triton.InferenceServerClient(url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.get_server_metadata()["name"] == "flts-inference"
        assert client.is_model_ready(identifier, headers=headers)
        metadata = client.get_model_metadata(identifier, headers=headers)
        outputs = (
            None if binary else [triton.InferRequestedOutput(t["name"], binary_data=False) for t in metadata["outputs"]]
        )
        inputs = triton_inputs(metadata, rows, binary)
        result = client.infer(
            identifier,
            inputs,
            outputs=outputs,
            request_id="r-1",
            parameters={"inference_length": 3},
            headers=dict(headers),  # a copy: tritonclient adds Inference-Header-Content-Length to the dict it gets
        )
    finally:
        client.close()
    answer = result.get_response()
    assert answer["id"] == "r-1" and answer["model_name"] == identifier
    assert all(("binary_data_size" in tensor.get("parameters", {})) == binary for tensor in answer["outputs"])
    body = {"rows": rows, "inference_length": 3, "identifier": identifier}
    predicted = httpx.post(f"http://{url}/predict", json=body, headers=headers).json()["predictions"]
    times = [value.decode() if isinstance(value, bytes) else value for value in result.as_numpy("time").tolist()]
    assert times == [step["ts"] for step in predicted]
    for tensor in metadata["outputs"][1:]:
        forecast = result.as_numpy(tensor["name"])
        assert forecast.dtype == np.float64 and forecast.shape == (3,)
        assert forecast.tolist() == pytest.approx([step[tensor["name"]] for step in predicted]), tensor["name"]


def check_triton_refusals(
    url: str, identifier: str, rows: list[dict], refusals: dict[int, list[dict]], allowed: dict[str, str]
) -> None:
    """Every header set in `refusals` gets its status from each tritonclient call, in both modes, as an
    InferenceServerException that carries the server's message (the model's probe says not ready); `allowed`: the
    headers of a key that may use the model."""
    client = triton.InferenceServerClient(url)
    try:
        for status, header_sets in refusals.items():
            for headers in header_sets:
                assert not client.is_model_ready(identifier, headers=headers)
                with pytest.raises(InferenceServerException) as refused:
                    client.get_model_metadata(identifier, headers=headers)
                assert refused.value.status() == str(status) and "key" in refused.value.message()
                metadata = client.get_model_metadata(identifier, headers=allowed)
                for binary in (True, False):
                    with pytest.raises(InferenceServerException) as refused:
                        client.infer(identifier, triton_inputs(metadata, rows, binary), headers=dict(headers))
                    assert refused.value.status() == str(status) and "key" in refused.value.message()
    finally:
        client.close()
