"""Where the pipeline keeps each object, in one place: every service builds its keys and file names from here.

A lineage is named by its config_hash (`lineage_config_hash`): the uploads' content, the identifier and
the lineage part of the pipeline config. Its objects live under three buckets (datasets, processed data,
promotion) and one MLflow artifact directory per training run (the model bundle).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from flts.config import PipelineConfig
from flts.settings import CommonSettings

# ---------------------------------------------------------------------------------------- the lineage


def lineage_config_hash(
    config: PipelineConfig, identifier: str, train_sha256: str, test_sha256: str | None = None
) -> str:
    """sha256 of the canonical lineage config, the identifier and the content hashes of the uploaded files.

    The identifier is part of the lineage: the same file uploaded for two series makes two lineages, each
    with its own runs, model versions and champion. The gateway answers it; preprocess names its objects by it.
    """
    data = [train_sha256] + ([test_sha256] if test_sha256 else [])
    payload = _canonical_json({"config": config.lineage_part(), "identifier": identifier, "data": data})
    return hashlib.sha256(payload.encode()).hexdigest()


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# ------------------------------------------------------------------------------ datasets: the uploads


def upload_key(identifier: str, dataset_id: str, role: str) -> str:
    """An uploaded file (role: train or test) in the datasets bucket."""
    return f"{identifier}/{dataset_id}/{role}.csv"


def scoring_upload_key(identifier: str, claim_id: str) -> str:
    """A file of rows sent for batch scoring (`POST /score`) in the datasets bucket."""
    return f"{identifier}/scoring/{claim_id}.csv"


def identifier_prefix(identifier: str) -> str:
    """Everything of one identifier in the datasets and the processed-data buckets."""
    return f"{identifier}/"


# ------------------------------------------------------------------ processed data: one lineage's splits

# The claim check of a preprocessed lineage, beside its splits: its presence means "preprocessed".
CLAIM_FILE = "claim.json"
# The preprocessing metadata (what serving replays), the fitted scaler and the lineage config, as written.
METADATA_FILE = "metadata.json"
SCALER_FILE = "scaler.json"
CONFIG_FILE = "config.json"


def split_file(split: str) -> str:
    """One split (train, validation, test) of the preprocessed data."""
    return f"{split}.parquet"


def processed_prefix(settings: CommonSettings, identifier: str, config_hash: str) -> str:
    """A lineage's preprocessed splits, metadata, scaler and claim."""
    return f"s3://{settings.bucket_processed}/{identifier}/{config_hash}"


def processed_uri(settings: CommonSettings, identifier: str, config_hash: str, name: str) -> str:
    """One object of a lineage's preprocessed data (`CLAIM_FILE`, `METADATA_FILE`, `split_file(...)`, ...)."""
    return f"{processed_prefix(settings, identifier, config_hash)}/{name}"


def config_hash_of_claim(key: str) -> str:
    """The lineage of a claim's key (`<identifier>/<config_hash>/claim.json`) in the processed-data bucket."""
    return key.split("/")[1]


# -------------------------------------------------------------------------------- promotion: champions


def champion_pointer_uri(settings: CommonSettings, identifier: str, config_hash: str) -> str:
    """The lineage's promoted champion (written only when it was promoted)."""
    return f"s3://{settings.bucket_promotion}/{identifier}/{config_hash}/current.json"


def decision_uri(settings: CommonSettings, identifier: str, config_hash: str) -> str:
    """Eval's recorded outcome for the lineage: promoted, superseded or no_winner."""
    return f"s3://{settings.bucket_promotion}/{identifier}/{config_hash}/decision.json"


def history_prefix(identifier: str) -> str:
    """The identifier's promotion history in the promotion bucket (keys sort in time order)."""
    return f"{identifier}/history/"


def history_uri(settings: CommonSettings, identifier: str, at: datetime, config_hash: str) -> str:
    """One entry per promotion of the identifier, in time order."""
    return f"s3://{settings.bucket_promotion}/{history_prefix(identifier)}{at:%Y%m%dT%H%M%S%f}-{config_hash[:12]}.json"


# --------------------------------------------------------------- inference logs: scored batch claims


def inference_log_uri(settings: CommonSettings, identifier: str, day: datetime, claim_id: str) -> str:
    """A scored batch claim's result (written once: its presence means "scored")."""
    return f"s3://{settings.bucket_inference_logs}/{identifier}/{day:%Y-%m-%d}/{claim_id}.parquet"


# ------------------------------------------------------------------ the model bundle (MLflow artifacts)

# A run's bundle is the artifact directory MODEL_ARTIFACT_PATH; it is what the registry's versions point at.
MODEL_ARTIFACT_PATH = "model"
# In the bundle: the forecaster (type, layout and weights' description) and the preprocessing it was trained on.
MODEL_FILE = "model.json"
PREPROCESSING_FILE = "preprocessing.json"
# A network's forward pass exported as an ONNX graph: what inference runs (ONNX Runtime, no PyTorch).
GRAPH_FILE = "model.onnx"
