"""The shapes of the inference service's JSON answers, declared on each route (`response_model=`) and published in
its OpenAPI document; the Open Inference Protocol's as its specification words them (v2 REST). A route answering a
key its model lacks fails (extra keys are forbidden), so the document cannot fall behind what is answered."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from flts.records import Selection


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Readiness(Answer):
    """`GET /readyz`: `ready` with the count of champions held, or why not (no identifiers: the probe is public)."""

    status: str
    models: int | None = None  # only when ready


class ModelInfo(Answer):
    """`GET /model-info`: the champion /predict serves for an identifier, what a request must send, and why it won."""

    identifier: str
    model_type: str
    model_version: str
    run_id: str
    config_hash: str
    time_column: str
    input_columns: list[str]
    target_columns: list[str]
    rows_needed: int
    input_seq_len: int
    output_seq_len: int
    frequency: str
    max_inference_length: int
    max_missing_share: float
    column_models: dict[str, str]  # which model type forecasts each target column
    latest_row_ts: str | None  # the newest row known, what a body without rows forecasts from
    selection: Selection | None  # eval's reason and leaderboard (None: no record names this run)


class HeldChampion(ModelInfo):
    """`GET /models`: a champion held in memory, described in full."""

    loaded: Literal[True]


class KnownChampion(Answer):
    """`GET /models`: a champion the registry names but this replica has not loaded (it loads on first use)."""

    identifier: str
    model_version: str
    run_id: str
    loaded: Literal[False]


class Filled(Answer):
    """A cell of the request filled as preprocessing fills a gap: its time and column, and in a batch its window."""

    window: int | None = None
    ts: str
    column: str


class PredictAnswer(Answer):
    """`POST /predict`: the forecast of the (first) window, one record per step, original scale; in a batch each
    window's in `forecasts`. Written by orjson, not validated: this model documents it."""

    identifier: str
    model_type: str
    model_version: str
    run_id: str
    config_hash: str
    predictions: list[dict[str, Any]]  # per step: ts and each target column's value
    last_row_ts: str
    recursive_steps: int  # steps beyond the model's horizon, forecast from its own earlier steps
    filled: list[Filled]
    forecasts: list[list[dict[str, Any]]] | None = None  # only for a batch (`windows`)


# ------------------------------------------------------------------------------ Open Inference Protocol (v2)


class ServerMetadata(Answer):
    name: str
    version: str
    extensions: list[str]


class ServerLive(Answer):
    live: bool


class ServerReady(Answer):
    ready: bool


class TensorMetadata(Answer):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(Answer):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, int]  # rows_needed, max_inference_length


class ModelReady(Answer):
    name: str
    ready: bool
