"""A secret left at its .env.example placeholder, or too short, stops a service at start, naming the variable.

Every placeholder in .env.example is followed to the FLTS processes that read it (docker compose hands it to them
under the variable named here) or is named below as read only by another program, with the reason.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flts.config import REPO_ROOT
from flts.kafka_users import SERVICES as KAFKA_SERVICES
from flts.settings import (
    MIN_API_KEY_CHARS,
    MIN_SECRET_CHARS,
    CommonSettings,
    GatewaySettings,
    InferenceSettings,
    InitSettings,
    TrainSettings,
)
from flts.storage_users import SERVICES as STORAGE_SERVICES

ENV_EXAMPLE = REPO_ROOT / ".env.example"
SASL = {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "flts-admin"}

# .env name -> (the settings class of a process compose gives it to, the variable it reads there, other fields).
READ_BY_FLTS = {
    "FLTS_ADMIN_API_KEY": [(GatewaySettings, "AUTH_ADMIN_KEY", {}), (InferenceSettings, "AUTH_ADMIN_KEY", {})],
    "S3_SECRET_KEY": [(InitSettings, "AWS_SECRET_ACCESS_KEY", {})],
    "KAFKA_ADMIN_PASSWORD": [(InitSettings, "KAFKA_SASL_PASSWORD", SASL)],
    **{
        f"{service.upper()}_S3_SECRET_KEY": [(InitSettings, f"{service.upper()}_S3_SECRET_KEY", {})]
        for service in STORAGE_SERVICES
    },
    **{
        f"{service.upper()}_KAFKA_PASSWORD": [
            (InitSettings, f"{service.upper()}_KAFKA_PASSWORD", {}),
            (TrainSettings, "KAFKA_SASL_PASSWORD", {**SASL, "kafka_sasl_username": f"flts-{service}"}),
        ]
        for service in KAFKA_SERVICES
    },
}
# Secrets of .env.example no FLTS process reads: their own programs take them as given.
READ_BY_OTHERS = {
    "POSTGRES_PASSWORD": "PostgreSQL's image and the MLflow server's backend URI",
    "GRAFANA_ADMIN_PASSWORD": "Grafana's image",
}


def placeholders() -> dict[str, str]:
    """The variables .env.example sets to a placeholder secret, and the placeholder."""
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#")]
    values = dict(line.split("=", 1) for line in lines)
    return {name: value for name, value in values.items() if "replace" in value.lower()}


def test_every_placeholder_of_the_env_example_is_refused_or_named_as_read_by_another_program():
    found = placeholders()
    assert len(found) >= 17, found  # the admin key, the root S3 key, 7 S3 users, the Kafka admin and 6 services
    assert set(found) == set(READ_BY_FLTS) | set(READ_BY_OTHERS)


@pytest.mark.parametrize("name", sorted(READ_BY_FLTS))
def test_a_service_refuses_to_start_with_a_placeholder_secret_and_names_the_variable(name, monkeypatch):
    placeholder = placeholders()[name]
    for settings_class, variable, fields in READ_BY_FLTS[name]:
        monkeypatch.setenv(variable, placeholder)
        with pytest.raises(ValidationError, match=f"{variable}.*placeholder of .env.example") as refused:
            settings_class(**fields)
        assert placeholder not in str(refused.value)  # never repeated: a real secret would be refused the same way
        monkeypatch.delenv(variable)


@pytest.mark.parametrize(
    "settings_class, variable, minimum, fields",
    [
        (GatewaySettings, "AUTH_ADMIN_KEY", MIN_API_KEY_CHARS, {}),
        (CommonSettings, "AWS_SECRET_ACCESS_KEY", MIN_SECRET_CHARS, {}),
        (CommonSettings, "KAFKA_SASL_PASSWORD", MIN_SECRET_CHARS, SASL),
        (InitSettings, "EVAL_S3_SECRET_KEY", MIN_SECRET_CHARS, {}),
        (InitSettings, "INFERENCE_KAFKA_PASSWORD", MIN_SECRET_CHARS, {}),
    ],
)
def test_a_secret_shorter_than_its_minimum_is_refused_at_start(settings_class, variable, minimum, fields, monkeypatch):
    monkeypatch.setenv(variable, "k" * (minimum - 1))
    with pytest.raises(ValidationError, match=f"{variable}.* {minimum - 1} characters long; it needs at least"):
        settings_class(**fields)
    monkeypatch.setenv(variable, "k" * minimum)
    assert getattr(settings_class(**fields), variable.lower()).get_secret_value() == "k" * minimum


def test_an_unset_secret_is_not_a_placeholder():
    """Empty means not given (no SASL login, no S3 user made, no admin key): each place decides what that means."""
    settings = InitSettings()
    assert settings.service_s3_secrets(STORAGE_SERVICES) == {} and not settings.aws_secret_access_key.get_secret_value()
