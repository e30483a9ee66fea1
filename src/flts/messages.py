"""Typed, versioned Kafka message schemas (claim checks: pointers, hashes and counts, never data).

Producer and consumer share these classes. A payload that does not validate is a poison
message: the consumer loop sends it to the dead-letter topic with the reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flts.config import ModelType

SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _event_id() -> str:
    return uuid.uuid4().hex


S3Uri = Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,62}/.+")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Message(BaseModel):
    """Envelope fields every message carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str] = "message"

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=_event_id)
    created_at: datetime = Field(default_factory=_now)
    identifier: str = "global"

    @property
    def key(self) -> str:
        """Kafka key: one lineage's events stay ordered on one partition."""
        return self.identifier

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> MessageT:
        if raw is None:
            raise MessageError(f"{cls.__name__}: empty message value")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise MessageError(f"{cls.__name__}: {_short(exc)}") from exc


MessageT = TypeVar("MessageT", bound=Message)


class MessageError(ValueError):
    """A payload that cannot be a message of the expected type (poison)."""


def _short(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


class ObjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    uri: S3Uri
    sha256: Sha256
    size_bytes: int = Field(ge=0)
    rows: int | None = Field(default=None, ge=0)


class DatasetUploaded(Message):
    kind: ClassVar[str] = "dataset-uploaded"
    dataset_id: str
    train: ObjectRef
    test: ObjectRef | None = None
    filename: str
    columns: list[str]
    force: bool = False

    @property
    def key(self) -> str:
        return self.dataset_id


class LineageMessage(Message):
    config_hash: Sha256

    @property
    def key(self) -> str:
        return self.config_hash


class TrainingData(LineageMessage):
    """The claim check for preprocessed data: every trainer reads the same splits."""

    kind: ClassVar[str] = "training-data"
    dataset_id: str
    train: ObjectRef
    validation: ObjectRef
    test: ObjectRef
    metadata: ObjectRef
    time_column: str
    feature_columns: list[str]
    target_columns: list[str]
    frequency: str
    force: bool = False
    uploaded_at: datetime | None = Field(None, description="When the data was uploaded: orders the lineages.")


ClaimId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class InferenceData(Message):
    """A batch-scoring claim: rows to forecast, window by window, with the identifier's champion.

    ``rows="processed"``: a lineage's processed split (scaled; ``metadata`` is the lineage's, to unscale it),
    published by preprocess. ``rows="raw"``: a CSV of measurements as uploaded (``POST /score``), put on the
    champion's grid and gap-filled as preprocessing does. The result lands once, at a key named by
    ``claim_id``, so the same claim delivered twice writes one object. Keyed by identifier.
    """

    kind: ClassVar[str] = "inference-data"
    claim_id: ClaimId = Field(default_factory=_event_id)
    dataset_id: str
    rows: Literal["processed", "raw"] = "processed"
    config_hash: Sha256 | None = None
    data: ObjectRef
    metadata: ObjectRef | None = None

    @model_validator(mode="after")
    def _processed_rows_carry_metadata(self) -> InferenceData:
        if self.rows == "processed" and self.metadata is None:
            raise ValueError("processed rows need the lineage's metadata (to unscale them)")
        return self


class InferenceScored(Message):
    """A batch claim was scored: where its result is, by which model, and the mean absolute error per target."""

    kind: ClassVar[str] = "inference-scored"
    claim_id: ClaimId
    dataset_id: str
    result: ObjectRef
    windows: int = Field(ge=0)
    model_type: str
    model_version: str
    run_id: str
    mean_absolute_error: dict[str, float] = {}


TrainingStatus = Literal["RUNNING", "SUCCESS", "FAILED"]


class ModelTraining(LineageMessage):
    kind: ClassVar[str] = "model-training"
    model_type: ModelType
    status: TrainingStatus
    run_id: str | None = None
    model_version: str | None = None
    metrics: dict[str, float] = {}
    error: str | None = None

    @property
    def key(self) -> str:
        return self.config_hash


class ModelSelected(LineageMessage):
    kind: ClassVar[str] = "model-selected"
    model_type: ModelType
    run_id: str
    registered_model: str
    model_version: str
    score: float
    pointer: S3Uri

    @property
    def key(self) -> str:
        """Keyed by identifier: an identifier's promotions reach every replica in the order they were made."""
        return self.identifier


class Measurement(Message):
    """One new row of an identifier's series (a producer's, or the gateway's `POST /measurements`).

    ``values`` holds the measured columns (null: a missing cell, filled as preprocessing fills gaps);
    ``ts`` is the row's time on the series' grid. Keyed by identifier: one series' rows stay in order.
    """

    kind: ClassVar[str] = "measurement"
    ts: datetime
    values: dict[str, float | None]


class Forecast(Message):
    """The forecast made as a measurement landed: the next steps after ``last_observed``, original scale.

    ``measured_at`` is the measurement message's ``created_at``: the end-to-end lag is ``created_at``
    minus it.
    """

    kind: ClassVar[str] = "forecast"
    model_type: str
    model_version: str
    run_id: str
    last_observed: datetime
    measured_at: datetime
    ts: list[datetime]
    values: dict[str, list[float]]


class DeadLetter(BaseModel):
    """What a consumer could not handle, with the reason and the original bytes (base64)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value_b64: str
    headers: dict[str, str]
    reason: str
    consumer_group: str
    failed_at: datetime = Field(default_factory=_now)
