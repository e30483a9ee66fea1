"""The local stack's pure parts: settings, rendered broker config, credentials, versions, process groups."""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.config import REPO_ROOT
from flts.settings import CommonSettings
from flts.stack import StackConfig, common_settings, load_or_create_credentials, stack_environment
from flts.stack.cli import app
from flts.stack.config import service_credentials
from flts.stack.parts import KafkaPart, MinioPart, MlflowPart, new_cluster_id, render_server_properties
from flts.stack.procs import group_members, owned_by, signal_group, wait_for
from flts.stack.services import service_parts


@pytest.fixture(autouse=True)
def _no_stack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's FLTS_STACK_* settings must not change what these tests see."""
    for key in list(os.environ):
        if key.startswith("FLTS_STACK_"):
            monkeypatch.delenv(key)


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", kafka_port=39092)


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_defaults_live_outside_the_source_tree() -> None:
    config = StackConfig()
    assert config.state_dir == Path("~/.local/state/flts/stack").expanduser()
    assert config.cache_dir == Path("~/.cache/flts").expanduser()
    assert REPO_ROOT not in config.state_dir.parents
    ports = (config.kafka_port, config.kafka_controller_port, config.minio_port, config.minio_console_port)
    assert (*ports, config.mlflow_port) == (19092, 19093, 19000, 19001, 15000)


def test_settings_come_from_prefixed_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLTS_STACK_KAFKA_PORT", "29092")
    monkeypatch.setenv("FLTS_STACK_STATE_DIR", str(tmp_path / "s"))
    config = StackConfig()
    assert config.kafka_port == 29092
    assert config.state_dir == tmp_path / "s"
    assert config.kafka_bootstrap == "127.0.0.1:29092"


def test_server_properties_single_node_kraft(config: StackConfig, tmp_path: Path) -> None:
    props = parse_properties(render_server_properties(config, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:39092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for internal in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
        assert props[f"{internal}.replication.factor"] == "1"
    for internal in ("transaction.state.log", "share.coordinator.state.topic"):
        assert props[f"{internal}.min.isr"] == "1"


def test_cluster_id_is_a_kafka_uuid() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_cluster_id() != cluster_id


def test_credentials_are_generated_once_private_and_reused(config: StackConfig, tmp_path: Path) -> None:
    first = load_or_create_credentials(config)
    assert stat.S_IMODE(config.credentials_file.stat().st_mode) == 0o600
    assert load_or_create_credentials(config) == first
    assert len(first.secret_access_key) >= 8 and len(first.access_key_id) >= 3
    other = StackConfig(state_dir=tmp_path / "other")
    assert load_or_create_credentials(other) != first


def test_stack_environment_uses_common_settings_names(config: StackConfig) -> None:
    env = stack_environment(config)
    assert set(env) - {"MLFLOW_S3_ENDPOINT_URL"} <= {name.upper() for name in CommonSettings.model_fields}
    assert env["MLFLOW_S3_ENDPOINT_URL"] == env["S3_ENDPOINT_URL"] == "http://127.0.0.1:19000"
    settings = common_settings(config)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:39092"
    assert settings.aws_secret_access_key.get_secret_value() == env["AWS_SECRET_ACCESS_KEY"]


def test_env_command_prints_shell_exports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLTS_STACK_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092" in lines
    assert all(line.startswith("export ") for line in lines)


def test_versions_without_running_anything(config: StackConfig) -> None:
    kafka = KafkaPart(config)
    assert "not installed" in kafka.version()
    config.kafka_libs.mkdir(parents=True)
    (config.kafka_libs / "kafka_2.13-4.1.1.jar").touch()
    assert kafka.version() == "4.1.1"
    kafka.log_file.parent.mkdir(parents=True)
    kafka.log_file.write_text("[x] INFO Kafka version: 4.1.1 (org.apache.kafka.common.utils.AppInfoParser)\n")
    assert kafka.running_version() == "4.1.1"


def test_minio_version_from_go_build_info(config: StackConfig) -> None:
    config.minio_binary.parent.mkdir(parents=True)
    config.minio_binary.write_bytes(b"\x00junk\tmod\tgithub.com/minio/minio\tv0.0.0-2026-abc\th1:xyz\n")
    assert MinioPart._module_version(config.minio_binary) == "v0.0.0-2026-abc"


def test_a_process_group_is_found_and_stopped_whole(tmp_path: Path) -> None:
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 61"], cwd=tmp_path, start_new_session=True)
    try:
        assert wait_for(lambda: len(group_members(leader.pid)) == 3, 5)
        assert owned_by(leader.pid, tmp_path)
        assert not owned_by(leader.pid, tmp_path / "elsewhere")
        signal_group(leader.pid, signal.SIGTERM)
        assert wait_for(lambda: not group_members(leader.pid), 5)
    finally:
        signal_group(leader.pid, signal.SIGKILL)
        leader.wait()


def test_services_get_the_stack_env_and_their_own_settings(config: StackConfig) -> None:
    services = service_parts(config)
    assert set(services) == {"gateway", "preprocess", "train-gru", "train-lstm", "nonml", "eval", "inference"}
    gru, gateway = services["train-gru"], services["gateway"]
    assert gru.command()[-2:] == ["-m", "train_container.service"]
    assert gru.env()["MODEL_TYPE"] == "GRU" and gru.env()["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:39092"
    assert gru.endpoint == "group flts-train-gru" and gru.ports == ()
    assert services["train-lstm"].endpoint == "group flts-train-lstm"
    assert gateway.env()["HTTP_PORT"] == str(config.gateway_port) and gateway.endpoint == config.gateway_url
    assert services["inference"].ports == (config.inference_port,)
    assert len({service.home for service in services.values()}) == len(services)


def test_a_network_type_listed_in_the_expected_model_types_gets_a_trainer_of_its_own(
    config: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = (REPO_ROOT / "config" / "pipeline.yaml").read_text()
    assert "expected_model_types: [GRU, LSTM, LIGHTGBM" in pipeline
    custom = tmp_path / "pipeline.yaml"
    custom.write_text(pipeline.replace("expected_model_types: [GRU, LSTM,", "expected_model_types: [TRANSFORMER, TCN,"))
    monkeypatch.setenv("PIPELINE_CONFIG", str(custom))
    trainers = {name: part for name, part in service_parts(config).items() if name.startswith("train-")}
    assert sorted(trainers) == ["train-tcn", "train-transformer"]
    tcn = trainers["train-tcn"]
    assert tcn.env()["MODEL_TYPE"] == "TCN" and tcn.endpoint == "group flts-train-tcn"


def test_each_local_service_gets_its_own_s3_user_and_never_the_root_key(config: StackConfig) -> None:
    root = load_or_create_credentials(config)
    keys = {name: part.env()["AWS_ACCESS_KEY_ID"] for name, part in service_parts(config).items()}
    assert keys["train-gru"] == keys["train-lstm"] == "flts-train" and keys["gateway"] == "flts-gateway"
    secrets = {part.env()["AWS_SECRET_ACCESS_KEY"] for part in service_parts(config).values()}
    assert len(secrets) == 6 and root.secret_access_key not in secrets  # GRU and LSTM share the train user
    mlflow = MlflowPart(config).env()
    assert mlflow["AWS_ACCESS_KEY_ID"] == "flts-mlflow" and mlflow["AWS_SECRET_ACCESS_KEY"] not in secrets
    assert service_credentials(config, "eval") == service_credentials(config, "eval")  # the same on every `up`
    assert stack_environment(config)["AWS_ACCESS_KEY_ID"] == root.access_key_id


def test_the_local_stack_runs_its_apis_without_auth_unless_auth_enabled_says_so(
    config: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTH_ENABLED", raising=False)
    assert service_parts(config)["gateway"].env()["AUTH_ENABLED"] == "false"
    monkeypatch.setenv("AUTH_ENABLED", "true")
    monkeypatch.setenv("AUTH_ADMIN_KEY", "flts_local-admin-key-of-the-unit-test")
    env = service_parts(config)["inference"].env()
    assert env["AUTH_ENABLED"] == "true" and env["AUTH_ADMIN_KEY"] == "flts_local-admin-key-of-the-unit-test"


def test_a_cluster_id_never_starts_with_a_dash_which_the_storage_tool_reads_as_an_option() -> None:
    assert not any(new_cluster_id().startswith("-") for _ in range(2_000))  # 1 in 64 would, unchecked
