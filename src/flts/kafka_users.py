"""Least privilege in Kafka: with SASL/SCRAM on, one Kafka user per service, its ACLs naming only the topics
it produces and consumes and the consumer groups it joins.

The broker starts with one SCRAM user, the admin (a super user, `super.users`), formatted into its storage;
`flts init` logs in as the admin, creates the topics, then each service's user ``flts-<service>`` (its
password from the deployment: a Secret or `.env`) and that user's ACLs. Everything else is refused by the
broker's authorizer (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED). Without SASL (the local stack,
a trusted network) none of this applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from flts.config import NetworkType
from flts.settings import CommonSettings


@dataclass(frozen=True)
class KafkaGrants:
    produces: tuple[str, ...] = ()  # topic settings fields
    consumes: tuple[str, ...] = ()  # topic settings fields
    groups: tuple[str, ...] = ()  # consumer group name prefixes (each service's `consumer_group` and its suffixes)
    transactions: tuple[str, ...] = ()  # transactional id prefixes (a producer committing with consumed offsets)


# Every consumer may dead-letter what it cannot handle.
_CONSUMER_PRODUCES = ("topic_dead_letter",)

# service -> what its code does with Kafka, and nothing more (tests/unit/test_kafka_users.py checks the groups
# against the settings classes).
SERVICE_GRANTS: dict[str, KafkaGrants] = {
    # Publishes uploads, scoring claims and live rows; the status page peeks at the dead letters and a tenant reads
    # its own live forecasts (`GET /forecasts`): both assigned and sought, no group.
    "gateway": KafkaGrants(
        produces=("topic_dataset_uploaded", "topic_inference_data", "topic_measurements"),
        consumes=("topic_dead_letter", "topic_forecasts"),
    ),
    "preprocess": KafkaGrants(
        produces=("topic_training_data", "topic_inference_data", *_CONSUMER_PRODUCES),
        consumes=("topic_dataset_uploaded",),
        groups=("flts-preprocess",),
    ),
    # The networks' trainers: one group per network type (flts-train-gru, flts-train-lstm, ...), named one by one:
    # a prefix `flts-train-` would also let them join nonML's group and take its claims.
    "train": KafkaGrants(
        produces=("topic_model_training", *_CONSUMER_PRODUCES),
        consumes=("topic_training_data",),
        groups=tuple(f"flts-train-{network.lower()}" for network in get_args(NetworkType)),
    ),
    "nonml": KafkaGrants(
        produces=("topic_model_training", *_CONSUMER_PRODUCES),
        consumes=("topic_training_data",),
        groups=("flts-train-prophet",),
    ),
    "eval": KafkaGrants(
        produces=("topic_model_selected", *_CONSUMER_PRODUCES),
        consumes=("topic_model_training",),
        groups=("flts-eval",),
    ),
    # Follows promotions (a group per replica), scores claims and live rows (those exactly once: transactions).
    "inference": KafkaGrants(
        produces=("topic_inference_scored", "topic_forecasts", *_CONSUMER_PRODUCES),
        consumes=("topic_model_selected", "topic_inference_data", "topic_measurements"),
        groups=("flts-inference",),
        transactions=("flts-inference",),
    ),
}
SERVICES = tuple(SERVICE_GRANTS)
ADMIN_USER = "flts-admin"
SCRAM_ITERATIONS = 8192


def kafka_user(service: str) -> str:
    """A service's Kafka user name (its password is the secret)."""
    return f"flts-{service}"


def service_acls(settings: CommonSettings, service: str) -> list[tuple[str, str, str, str]]:
    """(resource type, name, pattern type, operation) of every ALLOW rule of one service, with the topic names
    of ``settings``. Read on a topic or group implies Describe; Write on any topic allows an idempotent producer,
    Write on a transactional id its transactions."""
    grants = SERVICE_GRANTS[service]
    rules = [("TOPIC", getattr(settings, field), "LITERAL", "WRITE") for field in grants.produces]
    rules += [("TOPIC", getattr(settings, field), "LITERAL", "READ") for field in grants.consumes]
    rules += [("GROUP", prefix, "PREFIXED", "READ") for prefix in grants.groups]
    rules += [("TRANSACTIONAL_ID", prefix, "PREFIXED", "WRITE") for prefix in grants.transactions]
    return rules


def ensure_kafka_users(settings: CommonSettings, passwords: dict[str, str], timeout: float = 30.0) -> list[str]:
    """Create or update each service's SCRAM user (with ``passwords[service]``) and its ACLs; idempotent.

    ``settings`` log in as the admin. Returns the users made, in ``SERVICES`` order.
    """
    unknown = sorted(set(passwords) - set(SERVICES))
    if unknown:
        raise ValueError(f"no Kafka ACLs for service(s) {unknown}; known: {list(SERVICES)}")
    if not passwords:
        return []
    if not settings.kafka_sasl:
        raise ValueError("Kafka users need SASL: set KAFKA_SECURITY_PROTOCOL (docs/security.md)")
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(settings.kafka_client_config())
    mechanism = ScramMechanism[settings.kafka_sasl_mechanism.replace("-", "_")]
    made = [service for service in SERVICES if service in passwords]
    upserts = [
        UserScramCredentialUpsertion(
            kafka_user(service), ScramCredentialInfo(mechanism, SCRAM_ITERATIONS), passwords[service].encode()
        )
        for service in made
    ]
    bindings = [
        AclBinding(
            ResourceType[resource],
            name,
            ResourcePatternType[pattern],
            f"User:{kafka_user(service)}",
            "*",
            AclOperation[operation],
            AclPermissionType.ALLOW,
        )
        for service in made
        for resource, name, pattern, operation in service_acls(settings, service)
    ]
    futures = [*admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values()]
    futures += [*admin.create_acls(bindings, request_timeout=timeout).values()]
    for future in futures:
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise RuntimeError(f"creating Kafka users and ACLs failed: {exc.args[0]}") from exc
    return [kafka_user(service) for service in made]
