"""The storage layout: what makes a lineage (its config_hash) and where its objects are kept."""

from flts.config import DEFAULT_PIPELINE_CONFIG, PipelineConfig, load_pipeline_config
from flts.layout import (
    CLAIM_FILE,
    config_hash_of_claim,
    identifier_prefix,
    lineage_config_hash,
    processed_uri,
    upload_key,
)
from flts.settings import CommonSettings

SHA_A = "a" * 64
SHA_B = "b" * 64


def test_config_hash_is_stable_and_changes_with_data_or_config():
    config = PipelineConfig()
    first = lineage_config_hash(config, "global", SHA_A)
    assert first == lineage_config_hash(PipelineConfig(), "global", SHA_A)
    assert first != lineage_config_hash(config, "global", SHA_B)
    changed = config.model_copy(update={"preprocessing": config.preprocessing.model_copy(update={"scaler": "robust"})})
    assert first != lineage_config_hash(changed, "global", SHA_A)


def test_the_default_config_hashes_as_it_always_has():
    """A lineage's name must not move when the config's code does (e.g. its Literals read from a table): the same
    upload under the default config, in code or from config/pipeline.yaml, keeps its config_hash, runs and champion."""
    expected = "b1692094ff4b30843e6dcb72a0381f9ac1b5d0fe5ae68822c23286e52d3ba071"
    assert lineage_config_hash(PipelineConfig(), "global", SHA_A) == expected
    assert lineage_config_hash(load_pipeline_config(DEFAULT_PIPELINE_CONFIG), "global", SHA_A) == expected
    assert lineage_config_hash(PipelineConfig(), "cell-17", SHA_A, SHA_B) == (
        "1fead0e87f84218996b1cc427e5a861229e99b6f89f7492c4af39acb5e152f17"
    )


def test_the_same_data_for_two_identifiers_makes_two_lineages():
    config = PipelineConfig()
    assert lineage_config_hash(config, "cell-a", SHA_A) != lineage_config_hash(config, "cell-b", SHA_A)


def test_upload_limits_do_not_change_the_lineage():
    config = PipelineConfig()
    tighter = config.model_copy(update={"limits": config.limits.model_copy(update={"max_columns": 8})})
    assert lineage_config_hash(config, "global", SHA_A) == lineage_config_hash(tighter, "global", SHA_A)


def test_model_hyperparameters_do_not_change_the_lineage():
    config = PipelineConfig()
    more_epochs = config.model_copy(
        update={
            "models": config.models.model_copy(
                update={"recurrent": config.models.recurrent.model_copy(update={"epochs": 3})}
            )
        }
    )
    assert lineage_config_hash(config, "global", SHA_A) == lineage_config_hash(more_epochs, "global", SHA_A)


def test_a_test_file_is_part_of_the_lineage():
    config = PipelineConfig()
    assert lineage_config_hash(config, "global", SHA_A, SHA_B) != lineage_config_hash(config, "global", SHA_A)


def test_a_claims_key_names_its_lineage():
    config_hash = lineage_config_hash(PipelineConfig(), "cell-a", SHA_A)
    uri = processed_uri(CommonSettings(), "cell-a", config_hash, CLAIM_FILE)
    bucket_and_key = uri.removeprefix("s3://").split("/", 1)
    assert bucket_and_key[0] == CommonSettings().bucket_processed
    assert bucket_and_key[1].startswith(identifier_prefix("cell-a"))
    assert config_hash_of_claim(bucket_and_key[1]) == config_hash


def test_uploads_of_an_identifier_are_under_its_prefix():
    assert upload_key("cell-a", "d1", "train").startswith(identifier_prefix("cell-a"))
    assert upload_key("cell-a", "d1", "train") != upload_key("cell-a", "d1", "test")
