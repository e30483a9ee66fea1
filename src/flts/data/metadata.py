"""The preprocessing metadata: what preprocess fitted, as one typed, versioned record.

Preprocess builds it; it travels to S3 (`metadata.json` beside the splits), into every model bundle
(`preprocessing.json`), and back out to the trainers, eval's scoring and serving, which read it only
through this model. A record another version wrote either loads (unknown keys are ignored) or is
refused when it is read, with the file and the missing or wrong field named: never later, at /predict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from flts.config import PipelineConfig
from flts.data.scaler import Scaler
from flts.records import VersionedRecord

# Bump when a field changes meaning or a required field is added; `read` refuses a newer version.
METADATA_VERSION = 1


class MetadataError(ValueError):
    """A metadata record this version cannot use."""


class _Record(VersionedRecord):
    KIND = "preprocessing metadata"
    NEWEST = METADATA_VERSION
    REFUSED = MetadataError
    WHEN_NEWER = "upgrade the service or retrain the model"
    WHEN_UNUSABLE = "preprocess the data and train again"


class Imputation(_Record):
    method: str
    max_gap_fill_steps: int
    fill_values: dict[str, float] | None  # per measured column, for mean and zero imputation


class PreprocessingMetadata(_Record):
    version: int
    time_column: str
    identifier: str | None
    frequency: str  # the grid's pandas offset alias
    grid_anchor: str  # ISO-8601: every grid time is anchor + k * frequency
    measured_columns: list[str]
    target_columns: list[str]
    lag_columns: list[str]
    time_feature_columns: list[str]
    gap_column: str
    feature_columns: list[str]  # the model's input columns, in order
    scaler: dict[str, Any]  # Scaler.to_dict of the scaler fitted on the measured columns
    clip: dict[str, tuple[float, float]] | None  # outlier bounds per measured column
    time_features: list[str]
    lag_features: list[int]
    imputation: Imputation
    test_source: Literal["split", "file"]
    input_rows: dict[str, int]
    gap_rows_filled: int
    duplicates_dropped: int
    config: PipelineConfig  # the pipeline config the lineage was preprocessed with
    rows: dict[str, int] = {}  # per split
    time_range: dict[str, dict[str, str | None]] = {}  # per split: first and last time
    # Set by the preprocess service when it stores the record under its lineage.
    config_hash: str | None = None
    dataset_id: str | None = None

    @property
    def fitted_scaler(self) -> Scaler:
        return Scaler.from_dict(self.scaler)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> PreprocessingMetadata:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MetadataError(f"{path}: preprocessing metadata cannot be read: {exc}") from exc
        return cls.parse(data, str(path))
