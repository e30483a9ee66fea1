from pathlib import Path

import pytest
from pydantic import ValidationError

from flts.config import DEFAULT_PIPELINE_CONFIG, PipelineConfig, load_pipeline_config
from flts.settings import CommonSettings, TrainSettings


def test_the_shipped_pipeline_config_loads_and_states_every_default():
    config = load_pipeline_config(DEFAULT_PIPELINE_CONFIG)
    assert config == PipelineConfig()
    assert config.windows.input_seq_len == 10
    assert config.models.recurrent.hidden_size == 128


def test_unknown_keys_in_the_pipeline_config_are_an_error(tmp_path: Path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("windows:\n  input_seq_len: 5\n  output_len: 2\n")
    with pytest.raises(ValidationError, match="output_len"):
        load_pipeline_config(path)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("MODEL_TYPE", "LSTM")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-of-the-test")
    settings = TrainSettings()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.consumer_group == "flts-train-lstm"
    assert "s3cr3t-value-of-the-test" not in repr(settings)


def test_settings_reject_an_unknown_model_type(monkeypatch):
    monkeypatch.setenv("MODEL_TYPE", "XGBOOST")
    with pytest.raises(ValidationError):
        TrainSettings()


def test_kafka_clients_connect_in_plaintext_unless_sasl_is_asked_for():
    assert CommonSettings(kafka_bootstrap_servers="kafka:9092").kafka_client_config() == {
        "bootstrap.servers": "kafka:9092"
    }


def test_sasl_settings_reach_every_kafka_client_and_stay_out_of_reprs(monkeypatch):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "flts-train")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-s3cr3t-of-the-test")
    settings = TrainSettings()
    assert settings.kafka_client_config() == {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "flts-train",
        "sasl.password": "kafka-s3cr3t-of-the-test",
    }
    assert "kafka-s3cr3t-of-the-test" not in repr(settings)


def test_sasl_without_a_login_is_refused_at_start_with_the_variables_named():
    with pytest.raises(ValidationError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        CommonSettings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="flts-eval")
