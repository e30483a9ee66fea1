"""The local stack's real parts: Apache Kafka 4 (KRaft), MinIO as S3, MLflow with artifacts in S3."""

from __future__ import annotations

import hashlib
import io
import os
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr
from rich.console import Console

from flts.settings import CommonSettings
from flts.stack import StackConfig, status, up
from flts.stack.parts import KafkaPart
from flts.stack.services import service_parts
from flts.storage import ObjectStore

pytestmark = pytest.mark.integration


def test_up_again_is_harmless(stack_config: StackConfig) -> None:
    """A second `up` restarts nothing: every process keeps its pid, and the infrastructure still answers.

    Services the e2e tests left behind are held to their pids only: a consumer's readiness is its group's
    membership, which a rebalance empties for a moment, so their state is not what this test is about."""
    before = {s.name: s.pid for s in status(stack_config)}
    started = time.monotonic()
    up(stack_config, Console(quiet=True))
    assert time.monotonic() - started < 20
    after = status(stack_config)
    assert {s.name: s.pid for s in after} == before
    backbone = [s for s in after if s.name in {"kafka", "minio", "mlflow"}]
    assert len(backbone) == 3
    assert all(s.state == "running" for s in backbone), backbone


def test_status_reports_every_part_running(stack_config: StackConfig) -> None:
    """The three infrastructure parts, running; services appear beside them only when started (the e2e
    tests' services, when those ran first in the session)."""
    statuses = {s.name: s for s in status(stack_config)}
    backbone = {"kafka", "minio", "mlflow"}
    assert backbone <= set(statuses)
    assert set(statuses) - backbone <= set(service_parts(stack_config))
    for part in (statuses[name] for name in backbone):
        assert part.state == "running", part
        assert part.pid and part.rss_bytes and part.version
    assert statuses["kafka"].ports == (stack_config.kafka_port, stack_config.kafka_controller_port)
    assert statuses["mlflow"].endpoint == f"http://127.0.0.1:{stack_config.mlflow_port}"


def test_topics_and_buckets_exist(common_settings: CommonSettings) -> None:
    topics = AdminClient({"bootstrap.servers": common_settings.kafka_bootstrap_servers}).list_topics(timeout=10)
    assert set(common_settings.topics) <= set(topics.topics)
    store = ObjectStore(common_settings)
    for bucket in common_settings.buckets:
        store.check_bucket(bucket)


def test_kafka_broker_is_apache_kafka_4(stack_config: StackConfig, common_settings: CommonSettings) -> None:
    admin = AdminClient({"bootstrap.servers": common_settings.kafka_bootstrap_servers})
    cluster = admin.describe_cluster(request_timeout=10).result()
    kafka = KafkaPart(stack_config)
    assert cluster.cluster_id == kafka.cluster_id()  # the broker we reach is the one this stack formatted
    assert [node.port for node in cluster.nodes] == [stack_config.kafka_port]
    reported = next(s.version for s in status(stack_config) if s.name == "kafka")
    assert reported.startswith("4."), f"broker reports Kafka {reported}"

    topic = f"stack-test-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": common_settings.kafka_bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=b"k", value=b"hello")
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": common_settings.kafka_bootstrap_servers, "group.id": topic})
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        message = consumer.poll(15)
        assert message is not None and message.error() is None
        assert (message.key(), message.value()) == (b"k", b"hello")
    finally:
        consumer.close()
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_object_round_trip(common_settings: CommonSettings) -> None:
    store = ObjectStore(common_settings)
    payload = os.urandom(9 * 1024 * 1024)  # above boto3's multipart threshold
    uri = f"s3://{common_settings.bucket_datasets}/stack-test/{uuid.uuid4().hex}/blob.bin"
    stored = store.put_stream(uri, io.BytesIO(payload))
    try:
        assert stored.sha256 == hashlib.sha256(payload).hexdigest()
        assert stored.size_bytes == len(payload)
        assert hashlib.sha256(store.get_bytes(uri)).hexdigest() == stored.sha256
        assert store.sha256_of(uri) == stored.sha256
        assert store.exists(uri)
        key = uri.split("/", 3)[3]
        listed = store.list(common_settings.bucket_datasets, prefix=key.rsplit("/", 1)[0])
        assert [(o["Key"], o["Size"]) for o in listed] == [(key, len(payload))]
    finally:
        store.delete(uri)
    assert not store.exists(uri)


def test_an_object_written_as_it_is_made_goes_up_in_parts_and_an_aborted_one_leaves_nothing(
    common_settings: CommonSettings,
) -> None:
    """ObjectStore.writer (what batch scoring writes its results with): 20 MiB in 1 MiB writes, multipart, then
    tail reads; a block that raises half-way stores nothing and leaves no multipart upload open."""
    store = ObjectStore(common_settings)
    prefix = f"s3://{common_settings.bucket_inference_logs}/stack-test/{uuid.uuid4().hex}"
    pieces = [os.urandom(1024 * 1024) for _ in range(20)]
    with store.writer(f"{prefix}/made.bin") as sink:
        for piece in pieces:
            sink.write(piece)
    payload = b"".join(pieces)
    try:
        assert sink.stored is not None and sink.stored.sha256 == hashlib.sha256(payload).hexdigest()
        assert store.stored(f"{prefix}/made.bin") == sink.stored
        assert store.get_tail(f"{prefix}/made.bin", 10) == payload[-10:]
        with pytest.raises(RuntimeError, match="half-way"), store.writer(f"{prefix}/aborted.bin") as aborted:
            for piece in pieces[:12]:
                aborted.write(piece)
            raise RuntimeError("the scorer failed half-way")
        assert not store.exists(f"{prefix}/aborted.bin")
        bucket, key = common_settings.bucket_inference_logs, f"{prefix}/aborted.bin".split("/", 3)[3]
        assert store._client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) == []
    finally:
        store.delete(f"{prefix}/made.bin")


@pytest.mark.parametrize("wrong", ["access_key", "secret"])
def test_wrong_credentials_refused(common_settings: CommonSettings, wrong: str) -> None:
    if wrong == "access_key":
        settings = common_settings.model_copy(update={"aws_access_key_id": "not-a-user"})
    else:
        settings = common_settings.model_copy(update={"aws_secret_access_key": SecretStr("not-the-secret")})
    with pytest.raises(ClientError) as raised:
        ObjectStore(settings).list(common_settings.bucket_datasets)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] in {"InvalidAccessKeyId", "SignatureDoesNotMatch"}


def test_mlflow_artifacts_land_in_s3_and_registry_alias_works(common_settings: CommonSettings, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=common_settings.mlflow_tracking_uri)
    name = f"stack-test-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    artifact = tmp_path / "MLmodel"
    artifact.write_text(f"run_id: {run_id}\n")
    client.log_metric(run_id, "rmse", 0.5)
    client.log_artifact(run_id, str(artifact), artifact_path="model")
    client.set_terminated(run_id)

    store = ObjectStore(common_settings)
    keys = [o["Key"] for o in store.list(common_settings.bucket_mlflow) if run_id in o["Key"]]
    assert len(keys) == 1 and keys[0].endswith("model/MLmodel"), keys
    assert store.get_bytes(f"s3://{common_settings.bucket_mlflow}/{keys[0]}") == artifact.read_bytes()

    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    champion = client.get_model_version_by_alias(name, "champion")
    assert (champion.version, champion.run_id) == (version.version, run_id)
