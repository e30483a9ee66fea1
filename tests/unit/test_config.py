from pathlib import Path

import pytest
from pydantic import ValidationError

from flts.config import (
    DEFAULT_PIPELINE_CONFIG,
    PipelineConfig,
    TrainSettings,
    compute_config_hash,
    load_pipeline_config,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_the_shipped_pipeline_config_loads_and_states_every_default():
    config = load_pipeline_config(DEFAULT_PIPELINE_CONFIG)
    assert config == PipelineConfig()
    assert config.windows.input_seq_len == 10
    assert config.models.recurrent.hidden_size == 128


def test_config_hash_is_stable_and_changes_with_data_or_config():
    config = PipelineConfig()
    first = compute_config_hash(config, "global", SHA_A)
    assert first == compute_config_hash(PipelineConfig(), "global", SHA_A)
    assert first != compute_config_hash(config, "global", SHA_B)
    changed = config.model_copy(update={"preprocessing": config.preprocessing.model_copy(update={"scaler": "robust"})})
    assert first != compute_config_hash(changed, "global", SHA_A)


def test_the_same_data_for_two_identifiers_makes_two_lineages():
    config = PipelineConfig()
    assert compute_config_hash(config, "cell-a", SHA_A) != compute_config_hash(config, "cell-b", SHA_A)


def test_upload_limits_do_not_change_the_lineage():
    config = PipelineConfig()
    tighter = config.model_copy(update={"limits": config.limits.model_copy(update={"max_columns": 8})})
    assert compute_config_hash(config, "global", SHA_A) == compute_config_hash(tighter, "global", SHA_A)


def test_model_hyperparameters_do_not_change_the_lineage():
    config = PipelineConfig()
    more_epochs = config.model_copy(
        update={
            "models": config.models.model_copy(
                update={"recurrent": config.models.recurrent.model_copy(update={"epochs": 3})}
            )
        }
    )
    assert compute_config_hash(config, "global", SHA_A) == compute_config_hash(more_epochs, "global", SHA_A)


def test_unknown_keys_in_the_pipeline_config_are_an_error(tmp_path: Path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("windows:\n  input_seq_len: 5\n  output_len: 2\n")
    with pytest.raises(ValidationError, match="output_len"):
        load_pipeline_config(path)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("MODEL_TYPE", "LSTM")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    settings = TrainSettings()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.consumer_group == "flts-train-lstm"
    assert "s3cr3t-value" not in repr(settings)


def test_settings_reject_an_unknown_model_type(monkeypatch):
    monkeypatch.setenv("MODEL_TYPE", "XGBOOST")
    with pytest.raises(ValidationError):
        TrainSettings()
