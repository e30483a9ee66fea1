"""The pipeline's services as local processes on the stack (`flts stack up --services`, `make demo`)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

from flts.config import NETWORK_MODEL_TYPES, load_pipeline_config
from flts.settings import (
    CommonSettings,
    ConsumerSettings,
    EvalSettings,
    GatewaySettings,
    InferenceSettings,
    NonmlSettings,
    PreprocessSettings,
    TrainSettings,
)
from flts.stack.config import StackConfig, common_settings, stack_environment
from flts.stack.parts import Part, http_ok


class ServicePart(Part):
    """One service, `python -m <container>.service`, configured only through its environment.

    Ready means: an HTTP service answers /healthz; a consumer has joined its consumer group.
    """

    def __init__(
        self,
        config: StackConfig,
        name: str,
        module: str,
        settings: type[CommonSettings],
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.title = f"service {module}"
        super().__init__(config)
        self.module = module
        self.overrides = {key.upper(): str(value) for key, value in (overrides or {}).items()}
        self.settings = settings(**{key.lower(): value for key, value in self.overrides.items()})

    @property
    def http_port(self) -> int | None:
        return getattr(self.settings, "http_port", None)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.http_port,) if self.http_port else ()

    @property
    def endpoint(self) -> str:
        if self.http_port:
            return f"http://{self.config.host}:{self.http_port}"
        return f"group {self.settings.consumer_group}" if isinstance(self.settings, ConsumerSettings) else "-"

    def install(self, console: Console) -> None:
        """Services run from this Python environment: nothing to fetch."""

    def configure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    def env(self) -> dict[str, str]:
        """The local stack serves on loopback for a demo: auth is off unless AUTH_ENABLED says otherwise.

        The service's own S3 user, not the root key (flts.storage_users)."""
        return {
            "AUTH_ENABLED": "false",
            **os.environ,
            **stack_environment(self.config, self.settings.service_name),
            **self.overrides,
            "PYTHONUNBUFFERED": "1",
        }

    def ready(self) -> bool:
        if self.http_port:
            return http_ok(f"{self.endpoint}/healthz")
        return isinstance(self.settings, ConsumerSettings) and _group_has_members(
            self.config, self.settings.consumer_group
        )

    def version(self) -> str:
        """Empty: a service is this checkout of flts, not a separately versioned component."""
        return ""

    def running_version(self) -> str:
        return ""


def _group_has_members(config: StackConfig, group: str) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**common_settings(config).kafka_client_config(), "log_level": 0})
    try:
        return bool(admin.describe_consumer_groups([group], request_timeout=3)[group].result().members)
    except KafkaException:
        return False


def network_trainers(config: StackConfig) -> list[str]:
    """The neural model types eval expects (`evaluation.expected_model_types`): one trainer each. GRU and LSTM
    by default; listing TCN or TRANSFORMER there switches their trainer on."""
    expected = load_pipeline_config(common_settings(config).pipeline_config).evaluation.expected_model_types
    return [model_type for model_type in NETWORK_MODEL_TYPES if model_type in expected]


def service_parts(config: StackConfig) -> dict[str, ServicePart]:
    """Every service once; the network trainers train side by side, one torch thread each."""
    host = {"http_host": config.host}
    consumers = [
        ("preprocess", "preprocess_container.service", PreprocessSettings, {}),
        *(
            (f"train-{model_type.lower()}", "train_container.service", TrainSettings, {"model_type": model_type})
            for model_type in network_trainers(config)
        ),
        ("nonml", "nonML_container.service", NonmlSettings, {}),
        ("eval", "eval_container.service", EvalSettings, {}),
    ]
    services = (
        ServicePart(
            config, "gateway", "gateway_container.service", GatewaySettings, {**host, "http_port": config.gateway_port}
        ),
        *(
            ServicePart(config, name, module, settings, {**overrides, "metrics_port": config.metrics_base_port + i})
            for i, (name, module, settings, overrides) in enumerate(consumers, start=1)
        ),
        ServicePart(
            config,
            "inference",
            "inference_container.service",
            InferenceSettings,
            {**host, "http_port": config.inference_port},
        ),
    )
    return {service.name: service for service in services}
