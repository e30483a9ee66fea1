"""Least privilege on the real MinIO: each service's own S3 user does its job and is refused everything else.

`up` created the users (flts.storage_users); the objects below are written with the root key, then read and
written with the scoped keys exactly as the services' code does (ObjectStore).
"""

from __future__ import annotations

import io
import uuid

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from flts.settings import CommonSettings
from flts.stack import StackConfig
from flts.stack import common_settings as stack_settings
from flts.storage import ObjectStore
from flts.storage_users import ensure_service_users

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root(common_settings: CommonSettings) -> ObjectStore:
    return ObjectStore(common_settings)


@pytest.fixture(scope="module")
def scoped(stack_config: StackConfig):
    """The ObjectStore a service builds from its own environment on the local stack."""
    return lambda service: ObjectStore(stack_settings(stack_config, service))


@pytest.fixture
def uris(common_settings: CommonSettings, root: ObjectStore) -> dict[str, str]:
    """One object in every bucket (written by root), under a fresh identifier."""
    s, identifier = common_settings, f"tenant-{uuid.uuid4().hex[:8]}"
    found = {
        "upload": f"s3://{s.bucket_datasets}/{identifier}/d1/train.csv",
        "scoring_rows": f"s3://{s.bucket_datasets}/{identifier}/scoring/c1.csv",
        "lineage": f"s3://{s.bucket_processed}/{identifier}/h1/train.parquet",
        "decision": f"s3://{s.bucket_promotion}/{identifier}/h1/decision.json",
        "scored": f"s3://{s.bucket_inference_logs}/{identifier}/2026-01-01/c1.parquet",
        "model": f"s3://{s.bucket_mlflow}/1/{identifier}/artifacts/model/weights.safetensors",
    }
    for name, uri in found.items():
        root.put_bytes(uri, name.encode())
    return found


@pytest.mark.parametrize(
    ("service", "denied"),
    [
        ("gateway", ["model"]),
        ("preprocess", ["decision", "scored", "model"]),
        ("train", ["upload", "scoring_rows", "decision", "scored", "model"]),
        ("nonml", ["upload", "decision", "model"]),
        ("eval", ["upload", "lineage", "scored", "model"]),
        ("inference", ["upload", "model"]),
        ("mlflow", ["upload", "lineage", "decision", "scored"]),
    ],
)
def test_a_service_cannot_read_another_services_objects(
    scoped, uris: dict[str, str], service: str, denied: list[str]
) -> None:
    store = scoped(service)
    for name in denied:
        with pytest.raises(ClientError) as refused:
            store.get_bytes(uris[name])
        assert refused.value.response["Error"]["Code"] == "AccessDenied", (service, name)


def test_readers_cannot_write_and_nobody_else_writes_a_bucket_owned_by_one_service(
    scoped, uris: dict[str, str], common_settings: CommonSettings
) -> None:
    attempts = [
        ("train", uris["lineage"]),  # trainers only read lineages
        ("inference", uris["decision"]),  # only eval promotes
        ("gateway", uris["lineage"]),
        ("gateway", uris["scored"]),  # it serves scored claims; only inference writes them
        ("preprocess", uris["upload"]),  # uploads are the gateway's
        ("eval", f"s3://{common_settings.bucket_mlflow}/forged/model"),
    ]
    for service, uri in attempts:
        with pytest.raises(ClientError) as refused:
            scoped(service).put_bytes(uri, b"forged")
        assert refused.value.response["Error"]["Code"] == "AccessDenied", (service, uri)


def test_each_service_does_its_own_job_with_its_own_user(
    scoped, root: ObjectStore, uris: dict[str, str], common_settings: CommonSettings
) -> None:
    s = common_settings
    identifier = uris["upload"].split("/")[3]
    gateway = scoped("gateway")
    gateway.check_bucket(s.bucket_datasets)  # its readiness check
    upload = f"s3://{s.bucket_datasets}/{identifier}/d2/train.csv"
    assert gateway.put_stream(upload, io.BytesIO(b"time,x\n")).size_bytes == 7
    assert b"".join(gateway.iter_chunks(upload)) == b"time,x\n"
    assert [o["Key"] for o in gateway.list(s.bucket_processed, f"{identifier}/")] == [f"{identifier}/h1/train.parquet"]
    assert gateway.get_bytes(uris["decision"]) == b"decision"  # the status page shows eval's decisions
    assert b"".join(gateway.iter_chunks(uris["scored"])) == b"scored"  # GET /score/{claim_id} streams it

    preprocess = scoped("preprocess")
    assert preprocess.get_bytes(upload) == b"time,x\n"
    claim = f"s3://{s.bucket_processed}/{identifier}/h2/claim.json"
    assert not preprocess.exists(claim)  # a missing object answers 404, not 403
    preprocess.put_json(claim, {"lineage": "h2"})

    for trainer in ("train", "nonml"):
        assert scoped(trainer).get_json(claim) == {"lineage": "h2"}

    eval_ = scoped("eval")
    eval_.put_json(uris["decision"], {"outcome": "promoted"})
    assert eval_.get_json(uris["decision"]) == {"outcome": "promoted"}

    inference = scoped("inference")
    assert inference.get_bytes(uris["scoring_rows"]) == b"scoring_rows"
    assert inference.get_json(claim) == {"lineage": "h2"}
    assert inference.get_json(uris["decision"]) == {"outcome": "promoted"}
    scored = f"s3://{s.bucket_inference_logs}/{identifier}/2026-01-02/c2.parquet"
    assert not inference.exists(scored)
    inference.put_bytes(scored, b"scored")
    assert root.get_bytes(scored) == b"scored"

    mlflow = scoped("mlflow")
    assert mlflow.get_bytes(uris["model"]) == b"model"
    mlflow.delete(uris["model"])
    assert not root.exists(uris["model"])


def test_init_creates_the_users_with_the_secrets_it_is_given_as_compose_and_the_chart_run_it(
    stack_config: StackConfig, stack_env: dict[str, str], uris: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flts init` (compose's init service, the chart's Job): root key and each user's secret from its env."""
    from typer.testing import CliRunner

    from flts.cli import app

    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EVAL_S3_SECRET_KEY", "rotated-eval-secret")
    try:
        result = CliRunner().invoke(app, ["init"])
        assert result.exit_code == 0, result.output
        assert "flts-eval" in result.output and "flts-gateway" not in result.output  # only the users given
        settings = stack_settings(stack_config, "eval")
        rotated = ObjectStore(settings.model_copy(update={"aws_secret_access_key": SecretStr("rotated-eval-secret")}))
        assert rotated.get_bytes(uris["decision"]) == b"decision"
        with pytest.raises(ClientError) as refused:
            rotated.get_bytes(uris["upload"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError):
            ObjectStore(settings).get_bytes(uris["decision"])  # the old secret no longer works
    finally:
        derived = stack_settings(stack_config, "eval").aws_secret_access_key.get_secret_value()
        ensure_service_users(stack_settings(stack_config), {"eval": derived})  # as `up` made it
