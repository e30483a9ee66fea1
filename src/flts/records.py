"""Eval's promotion records and the lineage status built from them, as typed, versioned models.

Eval writes them to the promotion bucket (a lineage's champion pointer and decision, the identifier's history);
the gateway, the status page, inference's champion loader, the client, the CLI and the demo read them only through
these models. The ground floor: nothing of flts is imported here, so every container and the client can.

A record an earlier version wrote still loads: keys it lacks take their defaults, keys this version does not know
are ignored, and `to_json` writes back exactly the keys a record was given (an answer serving a stored record shows
what was stored). One this version cannot use is refused when read, naming the file and the field.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError

# Bump when a field changes meaning or a required field is added; `parse` refuses a newer version.
RECORD_VERSION = 1


class VersionedRecord(BaseModel):
    """A frozen record read from a file, unknown keys ignored, refused by `parse` naming the file and the field.

    Each kind says what it is called, the newest version this code reads, what it raises, and what to do about a
    record that is newer or that this version cannot use (flts.data.metadata's preprocessing metadata is one)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    KIND: ClassVar[str]
    NEWEST: ClassVar[int]
    REFUSED: ClassVar[type[ValueError]]
    WHEN_NEWER: ClassVar[str]
    WHEN_UNUSABLE: ClassVar[str]

    @classmethod
    def parse(cls, data: Any, source: str) -> Self:
        """Validate a record read from `source` (named in the error), refusing one this version cannot use."""
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, int) and version > cls.NEWEST:
            raise cls.REFUSED(
                f"{source}: {cls.KIND} version {version} is newer than this version reads ({cls.NEWEST}); "
                f"{cls.WHEN_NEWER}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
            raise cls.REFUSED(
                f"{source}: {cls.KIND} (version {version}) cannot be used by this version ({cls.NEWEST}): "
                f"{problems}; {cls.WHEN_UNUSABLE}"
            ) from None


class RecordError(ValueError):
    """A promotion record this version cannot use."""


class Record(VersionedRecord):
    """A promotion record; model versions written as numbers read as text."""

    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True)
    KIND = "promotion record"
    NEWEST = RECORD_VERSION
    REFUSED = RecordError
    WHEN_NEWER = "upgrade the service"
    WHEN_UNUSABLE = "upload the data again to decide the lineage anew"

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, with exactly the keys it was given or read with."""
        return self.model_dump(mode="json", exclude_unset=True)


class LeaderboardEntry(Record):
    """One ranked model of a lineage, best first on the leaderboard (`flts.evaluate.Decision.leaderboard_records`)."""

    model_type: str
    run_id: str
    score: float
    servable: bool = True  # records from before the flag: every ranked model was servable
    not_servable_because: str | None = None  # only when not servable
    column_wins: list[str] = []  # the target columns it won on validation
    rmse_vs_persistence: dict[str, float] = {}  # per target column: test RMSE over persistence's


class ColumnComposite(Record):
    """What inference serves with each target column forecast by its winner, scored on test; no keys when some
    column has no winner (`flts.evaluate.Decision.column_composite`)."""

    column_models: dict[str, str] = {}
    score: float | None = None
    score_vs_persistence: float | None = None  # only when persistence ranked with a score above 0
    score_vs_champion: float | None = None  # only when there is a champion with a score above 0


class Promotion(Record):
    """A promotion: the lineage's champion pointer and the identifier's history entry (the same record)."""

    version: int = RECORD_VERSION  # eval sets it, so it is written; a record without one is version 1
    config_hash: str
    identifier: str
    model_type: str
    run_id: str
    registered_model: str
    model_version: str
    score: float
    reason: str
    interim: bool = False  # written only when true: the best model finished so far, served until the decision
    decided_at: str  # ISO-8601
    decided_at_ms: int
    leaderboard: list[LeaderboardEntry] = []
    column_winners: dict[str, str] = {}
    column_composite: ColumnComposite = ColumnComposite()


Outcome = Literal["promoted", "superseded", "no_winner"]


class EvalDecision(Record):
    """Eval's final word on a lineage (`decision.json`, written last: its presence means the lineage is decided)."""

    version: int = RECORD_VERSION  # eval sets it, so it is written; a record without one is version 1
    outcome: Outcome
    reason: str
    decided_at_ms: int
    run_id: str | None = None  # promoted: the champion's run
    champion_config_hash: str | None = None  # superseded: the later lineage holding the champion


class Selection(Record):
    """Why inference serves its champion (`/model-info`'s `selection`), from the champion's pointer."""

    reason: str | None = None
    leaderboard: list[LeaderboardEntry] = []
    interim: bool = False  # present only when true

    @classmethod
    def of(cls, promotion: Promotion) -> Selection:
        """The pointer's reason and leaderboard, and its interim flag when it has one."""
        interim = {"interim": True} if promotion.interim else {}
        return cls(reason=promotion.reason, leaderboard=promotion.leaderboard, **interim)


class LineageSummary(Record):
    """One of an identifier's lineages (`GET /lineages`), with eval's recorded outcome once decided."""

    config_hash: str
    preprocessed_at: str  # ISO-8601
    outcome: Outcome | None
    reason: str | None


class Lineages(Record):
    """An identifier's lineages, newest first (`GET /lineages`)."""

    identifier: str
    lineages: list[LineageSummary]


class Preprocessed(Record):
    """What preprocessing made of a lineage's data (`GET /runs/{config_hash}`)."""

    rows: dict[str, int]  # per split
    feature_columns: list[str]
    target_columns: list[str]
    frequency: str
    sampling: dict[str, Any]
    metadata_uri: str
    max_epochs: int  # the networks' epoch budget: the progress bars' end


class TrainingRun(Record):
    """One model's training run in a lineage, as MLflow has it now."""

    model_type: str
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    error: str | None
    started_at_ms: int
    seconds: float | None  # once ended
    metrics: dict[str, float]  # the overall test metrics
    progress: dict[str, float]  # the latest epoch a network logged while it trains


class LineageDecision(Record):
    """The decision as eval would take it now, and eval's recorded outcome once it took it."""

    ready: bool
    reason: str
    outcome: Outcome | None  # promoted, superseded (a lineage uploaded later holds the champion), no_winner
    column_winners: dict[str, str]  # each target column's best promotable model type on validation
    column_composite: ColumnComposite


class LineageStatus(Record):
    """Every stage of a lineage (`GET /runs/{config_hash}`): preprocessing, training, the leaderboard, the champion."""

    config_hash: str
    identifier: str
    preprocessed: Preprocessed | None
    training: list[TrainingRun]
    decision: LineageDecision
    leaderboard: list[LeaderboardEntry]
    champion: Promotion | None

    @property
    def decided(self) -> bool:
        """Eval recorded its outcome, or a final (not interim) champion is promoted."""
        return bool(self.decision.outcome or (self.champion and not self.champion.interim))
