"""The inference service's routes: the probes, the champions' descriptions and /predict (their dependencies and
the forecast every route asks for are in `deps.py`).

The request path: the body is parsed and checked on the event loop straight into numpy windows (gaps filled as
preprocessing fills them), the windows join a micro-batch, and the answer is written with orjson.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from flts import auth
from flts.auth import Caller
from flts.config import InferenceConfig
from flts.observability import log_context
from flts.predict import Forecasts, RequestError, ServingModel, Window, iso_times
from inference_container.deps import PREDICTIONS, InferenceDep, forecast, get_inference, refuse
from inference_container.models import HeldChampion, KnownChampion, ModelInfo, PredictAnswer, Readiness

log = logging.getLogger(__name__)

PREDICT_SECONDS = Histogram(
    "flts_predict_seconds",
    "Time to answer /predict.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)

# A cell is a number, a string holding one, or null (a missing cell); checked while parsing into arrays, which
# names the row and column of a bad one, so validation here only publishes the schema (and costs nothing per cell).
Cell = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]})]


class PredictRequest(BaseModel):
    """One window (`rows`), a batch of windows (`windows`), the earlier system's `data` shape, or none of
    them: then the forecast starts from the most recent rows this replica knows for the identifier."""

    model_config = ConfigDict(extra="forbid")

    identifier: str | None = Field(None, description="Which series' champion to use; the global one when absent.")
    rows: list[dict[str, Cell]] | None = Field(
        None,
        description="One window: the most recent rows ({time column: ISO-8601, column: number or null}), "
        "oldest first, at least `rows_needed` of them (see /model-info). Null cells and missing steps are "
        "filled as in training and listed in `filled`.",
    )
    windows: list[list[dict[str, Cell]]] | None = Field(None, description="A batch of windows, scored in one pass.")
    data: dict[str, list[Cell]] | None = Field(None, description="Earlier clients: {column: [values...]}.")
    index_col: str | None = Field(None, description="With `data`: the time column's name.")
    inference_length: int | None = Field(None, ge=1, description="Steps to forecast; beyond output_seq_len, recursive.")

    @model_validator(mode="after")
    def _at_most_one_shape(self) -> PredictRequest:
        given = [name for name in ("rows", "windows", "data") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(
                f"send exactly one of rows, windows or data, or none for the latest known rows (got {given})"
            )
        if self.windows is not None and not self.windows:
            raise ValueError("windows is empty")
        return self


def predict_body(model: ServingModel | None, latest: Window | None, limits: InferenceConfig) -> dict[str, Any]:
    """The /predict body as /openapi.json publishes it: PredictRequest with the real constraints of `model`, the
    global champion (row shape and column names, rows needed, batch and horizon limits), so clients and
    schema-driven fuzzers build bodies the model reads, and examples that reach it. Only the global (shared)
    champion's columns: the document is public, and a tenant's columns are not; `latest`: its latest rows."""
    schema = PredictRequest.model_json_schema()
    fields = schema["properties"]
    horizon = model.max_inference_length if model is not None else limits.max_inference_length
    fields["inference_length"]["anyOf"][0]["maximum"] = horizon
    fields["windows"]["anyOf"][0].update(minItems=1, maxItems=limits.max_batch_windows)
    shapes = ("rows", "windows", "data")
    schema["allOf"] = [{"not": {"required": [a, b]}} for i, a in enumerate(shapes) for b in shapes[i + 1 :]]
    if model is None:
        return {"schema": schema}
    time_column, measured = model.time_column, model.measured_columns
    number_or_null = {"anyOf": [{"type": "number"}, {"type": "null"}]}
    timestamp = {"type": "string", "format": "date-time"}
    window = {
        "type": "array",
        "minItems": model.rows_needed,
        "items": {
            "type": "object",
            "properties": {time_column: timestamp} | dict.fromkeys(measured, number_or_null),
            "required": [time_column, *measured],
        },
    }
    fields["rows"]["anyOf"][0] = window
    fields["windows"]["anyOf"][0]["items"] = window
    fields["data"]["anyOf"][0] = {
        "type": "object",
        "properties": {time_column: {"type": "array", "items": timestamp}}
        | {key: {"type": "array", "minItems": model.rows_needed, "items": number_or_null} for key in measured},
        "required": list(measured),
    }
    examples = {
        "latest": {"summary": "From the latest rows the replica knows", "value": {}},
        "horizon": {"summary": "The longest forecast from them", "value": {"inference_length": horizon}},
    }
    if latest is not None:  # the shape of a window on the grid; the values are placeholders, not the data
        rows = [{time_column: stamp, **dict.fromkeys(measured, 0.0)} for stamp in iso_times(latest.nanoseconds)]
        examples["rows"] = {"summary": "One window (placeholder values)", "value": {"rows": rows}}
    return {"schema": schema, "examples": examples}


router = APIRouter()


@router.get("/readyz", tags=["probes"], response_model_exclude_unset=True)
def readyz(inference: InferenceDep, response: Response) -> Readiness:
    """Ready once every champion in the registry was loaded, with a follower hearing of new ones."""
    reason = inference.unready_reason()
    if reason is not None:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return Readiness(status=reason)
    return Readiness(status="ready", models=len(inference.champions.all()))  # a public probe: no identifiers


@router.get("/model-info", tags=["models"], response_model=ModelInfo, response_model_exclude_unset=True)
def model_info(
    principal: Caller, inference: InferenceDep, identifier: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    """The champion /predict serves for the identifier; its selection with exactly the keys eval recorded."""
    return inference.describe(inference.champion_for(principal, identifier))


@router.get(
    "/models", tags=["models"], response_model=list[HeldChampion | KnownChampion], response_model_exclude_unset=True
)
def models(principal: Caller, inference: InferenceDep) -> list[dict[str, Any]]:
    """The champions the caller may use (an admin: all of them); those not held in memory say `loaded: false`."""
    return inference.listing(principal)


async def predict(request: Request) -> Response:
    started = time.perf_counter()
    inference = get_inference(request)
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    principal = auth.authenticate(request)
    try:
        body = PredictRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        PREDICTIONS.labels("rejected").inc()
        # A body that is not JSON comes back as its raw bytes: not echoed (nor encodable when not UTF-8).
        errors = [
            {key: value for key, value in error.items() if not (key == "input" and isinstance(value, bytes))}
            for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None
    model = await inference.champion(principal, body.identifier)
    with log_context(request_id=request_id, identifier=model.identity.identifier):
        try:
            windows = inference.windows_of(model, body.rows, body.windows, body.data, body.index_col)
        except RequestError as exc:
            raise refuse(422, "rejected", str(exc)) from exc
        forecasts, start = await forecast(inference, model, windows, body.inference_length)
    answer = functools.partial(predict_answer, model, windows, forecasts, start, batch=body.windows is not None)
    # A large answer (up to 256 windows x 60 steps: 5 MB of JSON) is written on a worker thread, as its forecast
    # was computed on one, so the event loop keeps answering meanwhile.
    heavy = len(windows) * forecasts.values.shape[1] > inference.limits.loop_max_work
    content = await asyncio.to_thread(answer) if heavy else answer()
    PREDICTIONS.labels("ok").inc()
    PREDICT_SECONDS.observe(time.perf_counter() - started)
    return Response(content, media_type="application/json", headers={"X-Request-ID": request_id})


def predict_answer(model: ServingModel, windows: list[Window], forecasts: Forecasts, start: int, batch: bool) -> bytes:
    """The /predict answer (JSON) for the request's windows, whose forecasts start at `start`; `batch`: they were
    sent as `windows` (each forecast listed, and each filled cell names its window)."""
    records = [model.records(forecasts, start + i) for i in range(len(windows))]
    content: dict[str, Any] = {
        **model.identity.__dict__,
        "predictions": records[0],
        "last_row_ts": iso_times(windows[0].nanoseconds[-1:])[0],
        # Steps beyond the model's horizon, forecast from its own earlier steps (their error compounds).
        "recursive_steps": max(0, forecasts.values.shape[1] - model.output_seq_len),
        "filled": [
            {**({"window": position} if batch else {}), **cell}
            for position, window in enumerate(windows)
            for cell in model.filled_cells(window)
        ],
    }
    if batch:
        content["forecasts"] = records
    return orjson.dumps(content)


# The first route that matches answers: /predict is a plain Starlette route, so no dependency solving runs per
# request (the body is parsed once, above); the FastAPI route of the same function documents it in OpenAPI.
router.add_route("/predict", predict, methods=["POST"], include_in_schema=False)
router.post(
    "/predict",
    tags=["predict"],
    response_model=PredictAnswer,
    dependencies=[Depends(auth.caller)],  # documents the key schemes; the plain route authenticates itself
    # The body's schema: PredictRequest's here; the app publishes it with the global champion's constraints
    # (`predict_body`, see service.py).
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    },
    responses={
        401: {"description": "No valid API key."},
        403: {"description": "The key may not use this identifier."},
        404: {"description": "No champion for this identifier (yet)."},
        413: {
            "description": "The body is over max_request_bytes, or asks for more windows x steps than one "
            "micro-batch may compute (max_batch_work)."
        },
        422: {"description": "The body cannot be served as sent; the message names the row, column or step."},
        429: {"description": "Too many requests waiting for the model; retry after Retry-After seconds."},
        503: {"description": "No champion loaded yet, or the champion failed while forecasting this request."},
        504: {"description": "No forecast within the request timeout."},
    },
)(predict)
