"""Where the pipeline keeps each object, in one place: every service builds its keys from here."""

from __future__ import annotations

from datetime import datetime

from flts.config import CommonSettings


def processed_prefix(settings: CommonSettings, identifier: str, config_hash: str) -> str:
    """A lineage's preprocessed splits, metadata, scaler and claim."""
    return f"s3://{settings.bucket_processed}/{identifier}/{config_hash}"


# The claim check of a preprocessed lineage, beside its splits: its presence means "preprocessed".
CLAIM_FILE = "claim.json"


def champion_pointer_uri(settings: CommonSettings, identifier: str, config_hash: str) -> str:
    """The lineage's promoted champion (written only when it was promoted)."""
    return f"s3://{settings.bucket_promotion}/{identifier}/{config_hash}/current.json"


def decision_uri(settings: CommonSettings, identifier: str, config_hash: str) -> str:
    """Eval's recorded outcome for the lineage: promoted, superseded or no_winner."""
    return f"s3://{settings.bucket_promotion}/{identifier}/{config_hash}/decision.json"


def history_uri(settings: CommonSettings, identifier: str, at: datetime, config_hash: str) -> str:
    """One entry per promotion of the identifier, in time order."""
    return f"s3://{settings.bucket_promotion}/{identifier}/history/{at:%Y%m%dT%H%M%S%f}-{config_hash[:12]}.json"


def inference_log_uri(settings: CommonSettings, identifier: str, day: datetime, claim_id: str) -> str:
    """A scored batch claim's result (written once: its presence means "scored")."""
    return f"s3://{settings.bucket_inference_logs}/{identifier}/{day:%Y-%m-%d}/{claim_id}.parquet"
