"""The per-service S3 policies: each names only the buckets (and keys) its service's code uses."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest

from flts.layout import scoring_upload_key, upload_key
from flts.settings import CommonSettings, InitSettings
from flts.storage_users import SERVICES, access_key, ensure_service_users, service_policy


def resources(policy: dict, action: str) -> set[str]:
    return {r for s in policy["Statement"] if action in s["Action"] for r in s["Resource"]}


def test_only_the_mlflow_server_reaches_the_mlflow_bucket() -> None:
    reads = {service: resources(service_policy(CommonSettings(), service), "s3:GetObject") for service in SERVICES}
    holders = [service for service, arns in reads.items() if any(arn.startswith("arn:aws:s3:::mlflow") for arn in arns)]
    assert holders == ["mlflow"]


def test_inference_reads_rows_sent_for_scoring_but_not_training_uploads() -> None:
    reads = resources(service_policy(CommonSettings(), "inference"), "s3:GetObject")
    prefix = "arn:aws:s3:::datasets/"
    (datasets,) = [arn.removeprefix(prefix) for arn in reads if arn.startswith(prefix)]
    assert fnmatch(scoring_upload_key("cell-1", "c0ffee"), datasets)  # IAM's * also spans '/'
    assert not fnmatch(upload_key("cell-1", "d1", "train"), datasets)


def test_trainers_and_eval_write_nowhere_but_their_own_buckets() -> None:
    settings = CommonSettings()
    assert resources(service_policy(settings, "train"), "s3:PutObject") == set()
    assert resources(service_policy(settings, "nonml"), "s3:PutObject") == set()
    assert resources(service_policy(settings, "eval"), "s3:PutObject") == {"arn:aws:s3:::model-promotion/*"}
    assert resources(service_policy(settings, "eval"), "s3:GetObject") == {"arn:aws:s3:::model-promotion/*"}


def test_policies_follow_renamed_buckets() -> None:
    settings = CommonSettings(bucket_processed="lineages")
    assert resources(service_policy(settings, "train"), "s3:GetObject") == {"arn:aws:s3:::lineages/*"}
    assert resources(service_policy(settings, "train"), "s3:ListBucket") == {"arn:aws:s3:::lineages"}


def test_init_reads_one_secret_per_service_and_skips_the_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {f"{s}_s3_secret_key" for s in SERVICES} <= set(InitSettings.model_fields)
    monkeypatch.setenv("GATEWAY_S3_SECRET_KEY", "gateway-secret-123")
    assert InitSettings().service_s3_secrets(SERVICES) == {"gateway": "gateway-secret-123"}
    assert access_key("gateway") == "flts-gateway"


def test_a_secret_for_a_service_without_a_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="no S3 policy for service"):
        ensure_service_users(CommonSettings(), {"grafana": "secret-123"})


def test_the_gateway_reads_scored_claims_but_writes_only_uploads() -> None:
    policy = service_policy(CommonSettings(), "gateway")
    assert "arn:aws:s3:::inference-logs/*" in resources(policy, "s3:GetObject")
    assert resources(policy, "s3:PutObject") == {"arn:aws:s3:::datasets/*"}
