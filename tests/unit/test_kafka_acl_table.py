"""The Kafka ACL table (flts.kafka_users) names what the services' code really uses."""

from typing import get_args

import pytest

from flts.config import NetworkType
from flts.kafka_users import SERVICE_GRANTS, service_acls
from flts.settings import (
    CommonSettings,
    EvalSettings,
    InferenceSettings,
    NonmlSettings,
    PreprocessSettings,
    TrainSettings,
)
from flts.storage_users import SERVICES as S3_SERVICES
from inference_container.scoring import scoring_group
from inference_container.streaming import streaming_group, transactional_id

CONSUMERS = {
    "preprocess": [PreprocessSettings()],
    "train": [TrainSettings(model_type=network) for network in get_args(NetworkType)],
    "nonml": [NonmlSettings()],
    "eval": [EvalSettings()],
    "inference": [InferenceSettings()],
}


@pytest.mark.parametrize("service", CONSUMERS)
def test_every_consumer_group_a_service_joins_is_granted_to_it(service):
    prefixes = SERVICE_GRANTS[service].groups
    groups = [settings.consumer_group for settings in CONSUMERS[service]]
    if service == "inference":
        settings = CONSUMERS[service][0]
        groups += [scoring_group(settings), streaming_group(settings), f"{settings.consumer_group}-host-1a2b"]
    for group in groups:
        assert any(group.startswith(prefix) for prefix in prefixes), group


def test_no_service_may_join_another_service_s_consumer_group():
    """A group a service may join that another one uses would let it take that service's messages (the trainers'
    old prefix `flts-train-` covered nonML's `flts-train-prophet`)."""
    for service, settings_list in CONSUMERS.items():
        for other, grants in SERVICE_GRANTS.items():
            if other != service:
                for settings in settings_list:
                    joinable = [p for p in grants.groups if settings.consumer_group.startswith(p)]
                    assert joinable == [], f"{other} may join {service}'s group {settings.consumer_group}"


def test_grants_name_only_topic_settings_and_only_services_that_have_an_s3_user():
    topic_fields = {name for name in CommonSettings.model_fields if name.startswith("topic_")}
    for service, grants in SERVICE_GRANTS.items():
        assert service in S3_SERVICES
        assert set(grants.produces) | set(grants.consumes) <= topic_fields


def test_only_eval_may_announce_a_champion_and_only_the_gateway_accepts_uploads():
    def writers(topic: str) -> set[str]:
        return {s for s in SERVICE_GRANTS if ("TOPIC", topic, "LITERAL", "WRITE") in service_acls(CommonSettings(), s)}

    assert writers("model-selected") == {"eval"}
    assert writers("dataset-uploaded") == {"gateway"}
    assert writers("model-training") == {"train", "nonml"}


def test_the_stream_forecasters_transactions_are_granted_to_inference_only():
    settings = InferenceSettings()
    for service, grants in SERVICE_GRANTS.items():
        granted = any(transactional_id(settings).startswith(prefix) for prefix in grants.transactions)
        assert granted == (service == "inference"), service


def test_the_gateway_reads_the_dead_letters_and_the_forecasts_and_joins_no_group():
    """Its readers (the status page's peek, `GET /forecasts`) assign partitions and seek: no group, no commits."""
    rules = service_acls(CommonSettings(), "gateway")
    reads = {name for kind, name, _, operation in rules if kind == "TOPIC" and operation == "READ"}
    assert reads == {"flts-dead-letter", "forecasts"}
    assert not [rule for rule in rules if rule[0] == "GROUP"]
