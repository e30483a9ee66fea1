"""The shapes of the gateway's JSON answers, declared on each route (`response_model=`) and published in its OpenAPI
document. A lineage's status and list are eval's records (flts.records); these are the rest. A route answering a key
its model lacks fails (extra keys are forbidden), so the document cannot fall behind what is answered."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from flts.messages import Forecast


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoredFile(Answer):
    """An uploaded file as stored (flts.messages.ObjectRef; the document names no store's scheme)."""

    uri: str
    sha256: str
    size_bytes: int
    rows: int | None


class DatasetAccepted(Answer):
    """`POST /datasets`: the upload stored and announced; its lineage's status is at `status_url`."""

    dataset_id: str
    identifier: str
    config_hash: str
    train: StoredFile
    test: StoredFile | None
    status_url: str


class ScoringClaim(Answer):
    """`POST /score`: the rows stored and claimed; the forecasts will be at `result_uri` (`GET /score/{claim_id}`)."""

    claim_id: str
    identifier: str
    rows: int
    data: StoredFile
    result_uri: str
    completion_topic: str


class ClaimPending(Answer):
    """`GET /score/{claim_id}` (202) before the claim is scored."""

    claim_id: str
    identifier: str
    status: str
    submitted_at: str  # ISO-8601


class MeasurementsAccepted(Answer):
    """`POST /measurements`: the rows published, one message each."""

    identifier: str
    rows: int
    topic: str


class StoredObject(Answer):
    key: str
    size_bytes: int
    last_modified: str  # ISO-8601


class Uploads(Answer):
    """`GET /datasets`: a page of an identifier's uploads; `next` continues (None: the last page)."""

    identifier: str
    items: list[StoredObject]
    next: str | None


class Series(Answer):
    """One line of a forecast-vs-actual plot: a value (None where not finite) per time, and its error."""

    name: str
    times: list[str]
    values: list[float | None]
    mae: float | None  # mean absolute error against the actual values (None for the actual values themselves)


class ForecastVsActual(Answer):
    """`GET /forecasts/{identifier}`: a model's test forecasts of one target beside the actual values."""

    identifier: str
    config_hash: str
    model_type: str
    lineage_champion: str | None
    run_id: str
    models: list[str]  # the lineage's finished model types
    target: str
    targets: list[str]
    step: int
    steps: int
    test_period: list[str]  # first and last test time
    series: list[Series]


class ForecastPoll(Answer):
    """`GET /forecasts?wait=...`: the forecasts published since the cursor, and the cursor to go on from."""

    identifier: str
    cursor: str
    forecasts: list[Forecast]  # as the inference replicas published them
