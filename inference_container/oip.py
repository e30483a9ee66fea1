"""The Open Inference Protocol (v2 REST, as KServe and Triton speak it) beside /predict, so their clients work.

Each identifier's champion is the model named by the identifier (`global`: the fleet's). One infer request is one
window, sent as named tensors of one dimension, one per column: the time column as BYTES (ISO-8601 strings) and
each measured column (`/v2/models/{name}`: their names) as FP64, oldest row first. The optional parameter
`inference_length` asks for more steps. The answer holds the time column (BYTES) and one FP64 tensor per target
column, one element per forecast step. Errors are `{"error": message}` with the status /predict would give.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from flts import __version__
from flts.auth import Caller
from flts.predict import RequestError, ServingModel, iso_times
from inference_container.api import PREDICTIONS, InferenceDep, forecast, refuse

ModelName = Annotated[str, Path(description="The identifier whose champion answers (global: the fleet's).")]


class Tensor(BaseModel):
    """One named input tensor; here always one dimension (one element per row)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Tensor]


def _error(exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


def _tensor(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


def _columns(model: ServingModel, inputs: list[Tensor]) -> dict[str, list[Any]]:
    """The request's tensors as {column: cells}, checked against what the model reads."""
    expected = {model.time_column: ("BYTES",), **dict.fromkeys(model.measured_columns, ("FP64", "FP32"))}
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        if tensor.name not in expected:
            raise RequestError(f"input {tensor.name!r} is not read by this model; it reads {list(expected)}")
        if tensor.shape != [len(tensor.data)]:
            raise RequestError(
                f"input {tensor.name!r}: shape {tensor.shape} does not match its {len(tensor.data)} elements "
                "(one dimension, one element per row)"
            )
        if tensor.datatype not in expected[tensor.name]:
            raise RequestError(f"input {tensor.name!r} is {tensor.datatype}; expected {expected[tensor.name][0]}")
        columns[tensor.name] = tensor.data
    return columns


def _inference_length(parameters: dict[str, Any]) -> int | None:
    length = parameters.get("inference_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise RequestError(f"parameter inference_length must be a whole number of steps >= 1, got {length!r}")
    return length


router = APIRouter(prefix="/v2", tags=["open inference protocol"])


@router.get("")
def server_metadata() -> dict[str, Any]:
    return {"name": "flts-inference", "version": __version__, "extensions": []}


@router.get("/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
def ready(inference: InferenceDep, response: Response) -> dict[str, bool]:
    is_ready = inference.unready_reason() is None
    response.status_code = 200 if is_ready else 503
    return {"ready": is_ready}


@router.get("/models/{name}")
def model_metadata(name: ModelName, principal: Caller, inference: InferenceDep) -> Any:
    try:
        model = inference.champion_for(principal, name)
    except HTTPException as exc:
        return _error(exc)
    return {
        "name": name,
        "versions": [model.identity.model_version],
        "platform": f"flts-{model.identity.model_type.lower()}",
        "inputs": [
            {"name": model.time_column, "datatype": "BYTES", "shape": [-1]},
            *({"name": column, "datatype": "FP64", "shape": [-1]} for column in model.measured_columns),
        ],
        "outputs": [
            {"name": model.time_column, "datatype": "BYTES", "shape": [-1]},
            *({"name": column, "datatype": "FP64", "shape": [-1]} for column in model.target_columns),
        ],
        "parameters": {"rows_needed": model.rows_needed, "max_inference_length": model.max_inference_length},
    }


@router.get("/models/{name}/ready")
def model_ready(name: ModelName, principal: Caller, inference: InferenceDep) -> Any:
    try:
        inference.champion_for(principal, name)
    except HTTPException as exc:
        return _error(exc)
    return {"name": name, "ready": True}


@router.post("/models/{name}/infer")
async def infer(name: ModelName, body: InferRequest, principal: Caller, inference: InferenceDep) -> Any:
    try:
        model = await inference.champion(principal, name)
        try:
            window = model.window_from_columns(_columns(model, body.inputs))
            length = _inference_length(body.parameters)
        except RequestError as exc:
            raise refuse(422, "rejected", str(exc)) from exc
        forecasts, start = await forecast(inference, model, [window], length)
    except HTTPException as exc:
        return _error(exc)
    PREDICTIONS.labels("ok").inc()
    values = forecasts.values[start]
    outputs = [_tensor(model.time_column, "BYTES", iso_times(forecasts.nanoseconds[start]))]
    outputs += [_tensor(column, "FP64", values[:, i].tolist()) for i, column in enumerate(model.target_columns)]
    answer: dict[str, Any] = {
        "model_name": name,
        "model_version": model.identity.model_version,
        "parameters": {"recursive_steps": max(0, len(values) - model.output_seq_len)},
        "outputs": outputs,
    }
    if body.id is not None:
        answer["id"] = body.id
    return answer
