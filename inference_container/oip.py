"""The Open Inference Protocol (v2 REST, as KServe and Triton speak it) beside /predict, so their clients work.

Each identifier's champion is the model named by the identifier (`global`: the fleet's). One infer request is one
window, sent as named tensors of one dimension, one per column: the time column as BYTES (ISO-8601 strings) and
each measured column (`/v2/models/{name}`: their names) as FP64 or any other FP, INT or UINT datatype, oldest row
first. The optional parameter `inference_length` asks for more steps. The answer holds the time column (BYTES) and
one FP64 tensor per target column (a requested output's `parameters.datatype` may ask for FP32 or FP16), one
element per forecast step; `outputs` picks some of them.

The body is JSON, whatever its Content-Type says (tritonclient sends none), or in Triton's binary tensor data
extension (tritonclient's default; framing in oip_binary.py); the request parameter `binary_data_output` or an
output's `parameters.binary_data` asks for binary outputs. Errors are `{"error": message}`: 400 for a body that
cannot be read, otherwise the status /predict would give (`OipErrors` rewrites those answered outside the routes).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flts import __version__
from flts.auth import Caller
from flts.predict import RequestError, ServingModel, iso_times
from inference_container import oip_binary
from inference_container.deps import PREDICTIONS, InferenceDep, forecast, refuse
from inference_container.models import ModelMetadata, ModelReady, ServerLive, ServerMetadata, ServerReady
from inference_container.oip_binary import NUMERIC, Blobs, Malformed

ModelName = Annotated[str, Path(description="The identifier whose champion answers (global: the fleet's).")]

FLOATS = ("FP64", "FP32", "FP16")  # what a forecast may be sent as (the first: unless asked otherwise)
ACCEPTED = {"BYTES", *NUMERIC}  # what an input may be (BOOL and BF16: no column holds them)


class Tensor(BaseModel):
    """One named input tensor; here always one dimension (one element per row). Its elements are `data`, or,
    with `parameters.binary_data_size`, that many bytes of the binary data after the JSON request."""

    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    """An output to answer; `parameters`: `binary_data` (bool) and `datatype` (FP64, FP32 or FP16 for forecasts)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None


def _error(exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


def _parse(body: bytes, headers: Any) -> tuple[InferRequest, Blobs]:
    """The request and its binary data, whatever the Content-Type; a Malformed names what cannot be read."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise Malformed(f"Content-Encoding {encoding!r} is not accepted; send the body uncompressed")
    header, blobs = oip_binary.split(body, headers.get(oip_binary.HEADER_LENGTH))
    try:
        return InferRequest.model_validate_json(header), blobs
    except ValidationError as exc:  # the raw input is not echoed: it can be bytes that are not text
        problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise Malformed(f"not an inference request: {'; '.join(problems[:5])}") from None


def _elements(tensor: Tensor, blobs: Blobs) -> list[Any] | None:
    """The tensor's elements, from `data` or from the binary data (None: a datatype no column holds, its bytes
    skipped); only what cannot be read is refused here, so a body is read whole before it is judged."""
    name, size = tensor.name, tensor.parameters.get("binary_data_size")
    if size is not None and tensor.data is not None:
        raise Malformed(f"input {name!r} has both data and binary_data_size")
    if size is None and tensor.data is None:
        raise Malformed(f"input {name!r} has neither data nor binary_data_size")
    if size is None:
        return tensor.data
    raw = blobs.take(name, size)
    return oip_binary.decode(name, tensor.datatype, raw) if tensor.datatype in ACCEPTED else None


def _columns(model: ServingModel, request: InferRequest, blobs: Blobs) -> dict[str, list[Any]]:
    """The request's tensors as {column: cells}, checked against what the model reads."""
    elements = [_elements(tensor, blobs) for tensor in request.inputs]
    blobs.check_used()
    expected = {model.time_column: ("BYTES",), **dict.fromkeys(model.measured_columns, tuple(NUMERIC))}
    columns: dict[str, list[Any]] = {}
    for tensor, data in zip(request.inputs, elements, strict=True):
        name, datatype = tensor.name, tensor.datatype
        if name not in expected:
            raise RequestError(f"input {name!r} is not read by this model; it reads {list(expected)}")
        if name in columns:
            raise RequestError(f"input {name!r} is sent twice")
        if data is None or datatype not in expected[name]:
            raise RequestError(f"input {name!r} is {datatype}; expected one of {'/'.join(expected[name])}")
        if tensor.shape != [len(data)]:
            raise RequestError(
                f"input {name!r}: shape {tensor.shape} does not match its {len(data)} elements "
                "(one dimension, one element per row)"
            )
        if tensor.data is not None and datatype in NUMERIC and NUMERIC[datatype].kind in "iu":
            _check_integers(name, datatype, data)
        columns[name] = data
    return columns


def _check_integers(name: str, datatype: str, data: list[Any]) -> None:
    """JSON numbers sent as an INT or UINT datatype are whole and in its range (binary ones are by construction)."""
    info = np.iinfo(NUMERIC[datatype])
    for row, value in enumerate(data):
        if isinstance(value, bool) or not isinstance(value, int) or not info.min <= value <= info.max:
            raise RequestError(f"input {name!r}, element {row + 1}: {value!r} is not a {datatype}")


def _inference_length(parameters: dict[str, Any]) -> int | None:
    length = parameters.get("inference_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise RequestError(f"parameter inference_length must be a whole number of steps >= 1, got {length!r}")
    return length


def _flag(parameters: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(f"{where} {key} must be true or false, got {value!r}")
    return value


def _outputs(model: ServingModel, request: InferRequest) -> list[tuple[str, str, bool]]:
    """(name, datatype, binary) of each output to answer: those asked for, or every one."""
    binary = _flag(request.parameters, "binary_data_output", False, "parameter")
    offered = {model.time_column: ("BYTES",), **dict.fromkeys(model.target_columns, FLOATS)}
    if not request.outputs:
        return [(name, datatypes[0], binary) for name, datatypes in offered.items()]
    chosen = []
    for output in request.outputs:
        datatypes = offered.get(output.name)
        if datatypes is None:
            raise RequestError(f"output {output.name!r} is not answered by this model; it answers {list(offered)}")
        datatype = output.parameters.get("datatype", datatypes[0])
        if datatype not in datatypes:
            raise RequestError(f"output {output.name!r} can be sent as {'/'.join(datatypes)}, not {datatype!r}")
        chosen.append(
            (output.name, datatype, _flag(output.parameters, "binary_data", binary, f"output {output.name!r}"))
        )
    return chosen


def _answer(content: dict[str, Any], outputs: list[tuple[str, str, bool, Any]]) -> Response:
    """JSON, or (with binary outputs) the JSON header then each binary output's bytes, as Triton answers."""
    blobs: list[bytes] = []
    content["outputs"] = []
    for name, datatype, binary, values in outputs:
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(values)]}
        if binary:
            blobs.append(oip_binary.encode(datatype, values))
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = values if datatype == "BYTES" else np.asarray(values, NUMERIC[datatype]).tolist()
        content["outputs"].append(tensor)
    header = orjson.dumps(content)
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        media_type="application/octet-stream",
        headers={oip_binary.HEADER_LENGTH: str(len(header))},
    )


router = APIRouter(prefix="/v2", tags=["open inference protocol"])


@router.get("")
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="flts-inference", version=__version__, extensions=["binary_tensor_data"])


@router.get("/health/live")
def live() -> ServerLive:
    return ServerLive(live=True)


@router.get("/health/ready")
def ready(inference: InferenceDep, response: Response) -> ServerReady:
    is_ready = inference.unready_reason() is None
    response.status_code = 200 if is_ready else 503
    return ServerReady(ready=is_ready)


# A refusal is answered as the protocol words it, {"error": ...}, by `_error` (a route's model describes its 200).
@router.get("/models/{name}", response_model=ModelMetadata)
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


@router.get("/models/{name}/ready", response_model=ModelReady)
def model_ready(name: ModelName, principal: Caller, inference: InferenceDep) -> Any:
    try:
        inference.champion_for(principal, name)
    except HTTPException as exc:
        return _error(exc)
    return {"name": name, "ready": True}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its $defs put in place (an OpenAPI body cannot refer to the schema's own $defs)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return (
                resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
                if "$ref" in node
                else {key: resolve(value) for key, value in node.items()}
            )
        return [resolve(value) for value in node] if isinstance(node, list) else node

    return resolve(schema)


INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON (any Content-Type), or Triton's binary tensor data extension: the JSON request, its "
        f"length in the {oip_binary.HEADER_LENGTH} header, then each binary input's bytes.",
        "content": {"application/json": {"schema": _inlined(InferRequest.model_json_schema())}},
    }
}


@router.post(
    "/models/{name}/infer",
    openapi_extra=INFER_BODY,
    responses={
        400: {"description": "The body cannot be read: not a request, or its binary framing is broken."},
        422: {"description": "The tensors are not what the model reads, or it cannot forecast from them."},
    },
)
async def infer(name: ModelName, request: Request, principal: Caller, inference: InferenceDep) -> Response:
    """One window in, its forecast out (JSON, or binary outputs as asked for); errors are {"error": message}."""
    try:
        try:
            body, blobs = _parse(await request.body(), request.headers)
        except Malformed as exc:
            raise refuse(400, "rejected", str(exc)) from exc
        model = await inference.champion(principal, name)
        try:
            window = model.window_from_columns(_columns(model, body, blobs))
            length = _inference_length(body.parameters)
            outputs = _outputs(model, body)
        except Malformed as exc:
            raise refuse(400, "rejected", str(exc)) from exc
        except RequestError as exc:
            raise refuse(422, "rejected", str(exc)) from exc
        forecasts, start = await forecast(inference, model, [window], length)
    except HTTPException as exc:
        return _error(exc)
    PREDICTIONS.labels("ok").inc()
    values = forecasts.values[start]
    columns = {model.time_column: iso_times(forecasts.nanoseconds[start])}
    columns.update((column, values[:, i]) for i, column in enumerate(model.target_columns))
    content: dict[str, Any] = {
        "model_name": name,
        "model_version": model.identity.model_version,
        "parameters": {"recursive_steps": max(0, len(values) - model.output_seq_len)},
    }
    if body.id is not None:
        content["id"] = body.id
    return _answer(content, [(output, datatype, binary, columns[output]) for output, datatype, binary in outputs])


class OipErrors:
    """ASGI middleware: under /v2 an error answered outside these routes as `{"detail": ...}` (the key check's
    401, the body limit's 413, FastAPI's own 404 and 405) is sent as `{"error": ...}`, what OIP clients read
    (tritonclient shows its own KeyError instead of the message otherwise)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v2"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
            elif start is None or message["type"] != "http.response.body":
                await send(message)
            else:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = _as_error(b"".join(chunks))
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewriting_send)


def _as_error(body: bytes) -> bytes:
    try:
        content = json.loads(body)
    except ValueError:
        return body
    if not isinstance(content, dict) or "error" in content or "detail" not in content:
        return body
    detail = content["detail"]
    return json.dumps({"error": detail if isinstance(detail, str) else json.dumps(detail)}).encode()
