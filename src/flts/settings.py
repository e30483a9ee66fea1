"""Settings: one class per service, read from environment variables (the pipeline config file is `flts.config`).

Environment variable names are the upper-cased field names, with no prefix, so that
docker compose, the Helm chart and the local stack all set the same names; the
deployment drift test reads these classes to know what each service expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flts.config import DEFAULT_PIPELINE_CONFIG, NetworkType

# Secrets a deployment sets. .env.example ships placeholders for them ("replace-with-..."): a value that still holds
# one, or is shorter than its minimum, stops the process at start with the variable named. Empty: not set (no login,
# no user made, no admin key: each place says what that means).
PLACEHOLDER_MARKERS = ("replace-with", "replacewith")
MIN_SECRET_CHARS = 16  # S3 secrets and Kafka passwords (MinIO itself takes 8)
MIN_API_KEY_CHARS = 32  # the admin API key (`flts keys create` makes 48, the chart 48)
# Where docker compose takes each variable from (.env), for the message.
ENV_FILE_NAMES = {
    "AWS_SECRET_ACCESS_KEY": "S3_SECRET_KEY or <SERVICE>_S3_SECRET_KEY",
    "KAFKA_SASL_PASSWORD": "KAFKA_ADMIN_PASSWORD or <SERVICE>_KAFKA_PASSWORD",
    "AUTH_ADMIN_KEY": "FLTS_ADMIN_API_KEY",
}


def refuse_weak_secret(variable: str, secret: SecretStr, minimum: int = MIN_SECRET_CHARS) -> SecretStr:
    """The secret, unless it is .env.example's placeholder or shorter than ``minimum`` (then a ValueError naming
    ``variable``, the environment variable it came from)."""
    value = secret.get_secret_value()
    if not value:
        return secret
    where = f" (docker compose: {ENV_FILE_NAMES[variable]} in .env)" if variable in ENV_FILE_NAMES else ""
    if any(marker in value.lower() for marker in PLACEHOLDER_MARKERS):
        raise ValueError(
            f"{variable}{where} still holds the placeholder of .env.example: set a random secret of your own "
            "(e.g. openssl rand -hex 20; docs/security.md)"
        )
    if len(value) < minimum:
        raise ValueError(
            f"{variable}{where} is {len(value)} characters long; it needs at least {minimum} "
            "(e.g. openssl rand -hex 20; docs/security.md)"
        )
    return secret


class CommonSettings(BaseSettings):
    """What every service needs: where Kafka, S3 and MLflow are, and the topic and bucket names."""

    # An error never repeats the value it refuses: it can be a secret.
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    service_name: str = "flts"
    log_level: str = "INFO"
    pipeline_config: Path = DEFAULT_PIPELINE_CONFIG

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # PLAINTEXT inside a trusted network, or SASL/SCRAM: each service logs in as its own Kafka user, whose
    # ACLs name only the topics and groups it uses (flts.kafka_users; docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_ca_location: str = ""  # SASL_SSL: the CA bundle that signed the broker's certificate
    topic_dataset_uploaded: str = "dataset-uploaded"
    topic_training_data: str = "training-data"
    topic_model_training: str = "model-training"
    topic_model_selected: str = "model-selected"
    topic_inference_data: str = "inference-data"
    topic_inference_scored: str = "inference-scored"
    topic_measurements: str = "measurements"
    topic_forecasts: str = "forecasts"
    topic_dead_letter: str = "flts-dead-letter"

    s3_endpoint_url: str = "http://127.0.0.1:19000"
    aws_access_key_id: str = ""
    aws_secret_access_key: SecretStr = SecretStr("")
    aws_region: str = "us-east-1"
    bucket_datasets: str = "datasets"
    bucket_processed: str = "processed-data"
    bucket_mlflow: str = "mlflow"
    bucket_promotion: str = "model-promotion"
    bucket_inference_logs: str = "inference-logs"

    mlflow_tracking_uri: str = "http://127.0.0.1:15000"
    mlflow_experiment: str = "flts"
    registered_model_prefix: str = "flts"

    metrics_port: int = 0

    @field_validator("aws_secret_access_key", "kafka_sasl_password")
    @classmethod
    def _no_placeholder_secret(cls, secret: SecretStr, info: ValidationInfo) -> SecretStr:
        return refuse_weak_secret(str(info.field_name).upper(), secret)

    @model_validator(mode="after")
    def _sasl_needs_a_login(self) -> CommonSettings:
        if self.kafka_sasl and not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD (docs/security.md)"
            )
        return self

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka's connection settings, the same for every producer, consumer and admin client."""
        config: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap_servers}
        if self.kafka_sasl:
            config |= {
                "security.protocol": self.kafka_security_protocol,
                "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_sasl_username,
                "sasl.password": self.kafka_sasl_password.get_secret_value(),
            }
        if self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = self.kafka_ssl_ca_location
        return config

    @property
    def topics(self) -> list[str]:
        return [
            self.topic_dataset_uploaded,
            self.topic_training_data,
            self.topic_model_training,
            self.topic_model_selected,
            self.topic_inference_data,
            self.topic_inference_scored,
            self.topic_measurements,
            self.topic_forecasts,
            self.topic_dead_letter,
        ]

    @property
    def buckets(self) -> list[str]:
        return [
            self.bucket_datasets,
            self.bucket_processed,
            self.bucket_mlflow,
            self.bucket_promotion,
            self.bucket_inference_logs,
        ]


class InitSettings(CommonSettings):
    """`flts init`, the one process given the root S3 key (and, with SASL on, Kafka's admin login): topics,
    buckets, each service's own S3 user (flts.storage_users) and Kafka user (flts.kafka_users) with the
    secrets set here. An empty secret leaves that user alone (external S3; Kafka without SASL)."""

    service_name: str = "init"
    gateway_s3_secret_key: SecretStr = SecretStr("")
    preprocess_s3_secret_key: SecretStr = SecretStr("")
    train_s3_secret_key: SecretStr = SecretStr("")
    nonml_s3_secret_key: SecretStr = SecretStr("")
    eval_s3_secret_key: SecretStr = SecretStr("")
    inference_s3_secret_key: SecretStr = SecretStr("")
    mlflow_s3_secret_key: SecretStr = SecretStr("")
    gateway_kafka_password: SecretStr = SecretStr("")
    preprocess_kafka_password: SecretStr = SecretStr("")
    train_kafka_password: SecretStr = SecretStr("")
    nonml_kafka_password: SecretStr = SecretStr("")
    eval_kafka_password: SecretStr = SecretStr("")
    inference_kafka_password: SecretStr = SecretStr("")

    @field_validator("*")
    @classmethod
    def _no_placeholder_service_secret(cls, value: Any, info: ValidationInfo) -> Any:
        name = str(info.field_name)
        if name.endswith(("_s3_secret_key", "_kafka_password")):
            return refuse_weak_secret(name.upper(), value)
        return value

    def service_s3_secrets(self, services: tuple[str, ...]) -> dict[str, str]:
        """The S3 secrets that are set, by service."""
        return self._secrets(services, "s3_secret_key")

    def service_kafka_passwords(self, services: tuple[str, ...]) -> dict[str, str]:
        """The Kafka passwords that are set, by service."""
        return self._secrets(services, "kafka_password")

    def _secrets(self, services: tuple[str, ...], suffix: str) -> dict[str, str]:
        given = {service: getattr(self, f"{service}_{suffix}").get_secret_value() for service in services}
        return {service: secret for service, secret in given.items() if secret}


class ConsumerSettings(CommonSettings):
    """A Kafka-consuming service: its group, retry policy and poll limits."""

    consumer_group: str = "flts"
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 45_000
    handler_max_attempts: int = 3
    handler_backoff_seconds: float = 1.0
    # Retries back off exponentially up to this, so a backbone that comes back is noticed within it.
    handler_backoff_max_seconds: float = Field(10.0, gt=0)
    # An outage of S3, MLflow or Kafka (connection errors, 5xx) is waited out this long before the message
    # is dead-lettered; only data and model errors fail at once.
    handler_outage_seconds: float = 900.0
    # A message delivered this many times without its handler finishing crashes its consumer (OOM-killed,
    # segfault): the next delivery dead-letters it. The count survives the crash (Kafka offset metadata).
    handler_max_deliveries: int = Field(5, ge=1)
    # Lag with nothing consumed for this long (a handler running does not count) fails the consumer's
    # /healthz and restarts its process: the backstop for a consumer that stopped fetching. 0 disables it.
    consumer_stall_seconds: float = 300.0


class AuthSettings(BaseSettings):
    """The HTTP APIs' keys (flts.auth): a file of principals (hashes only) and/or the admin key (hashed at start).

    AUTH_ENABLED=false is the one switch that turns authentication off (the local demo's default).
    """

    # An error never repeats the value it refuses: it can be a secret.
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    auth_enabled: bool = True
    auth_keys_file: Path | None = None
    auth_admin_key: SecretStr = SecretStr("")

    @field_validator("auth_admin_key")
    @classmethod
    def _no_placeholder_key(cls, key: SecretStr) -> SecretStr:
        return refuse_weak_secret("AUTH_ADMIN_KEY", key, MIN_API_KEY_CHARS)


class GatewaySettings(CommonSettings, AuthSettings):
    service_name: str = "gateway"
    max_upload_bytes: int = 200 * 1024 * 1024
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # POST /measurements (live rows) has its own, small body limit and a cap on rows per request, both
    # enforced while the body streams in, and a token bucket of rows per principal (per gateway replica):
    # refilled at rows_per_second up to burst_rows, so one caller cannot crowd the topic out for the rest.
    measurements_max_bytes: int = Field(1024 * 1024, ge=1)
    measurements_max_rows: int = Field(10_000, ge=1)
    measurements_rows_per_second: float = Field(1_000.0, gt=0)
    measurements_burst_rows: int = Field(20_000, ge=1)
    # GET /forecasts (a tenant's live forecasts, read from the forecasts topic): the event streams and long polls
    # held at once per API key and in all (per replica; each holds a Kafka consumer and a thread), and how long one
    # event stream lasts (the client reconnects with Last-Event-ID and goes on where it stopped).
    forecast_streams_per_key: int = Field(4, ge=1)
    forecast_streams_total: int = Field(32, ge=1)
    forecast_stream_seconds: float = Field(300.0, gt=0)
    # POST /score: rows in one file (413 past it). A replica holds a claim's rows whole while it scores them (about
    # 4 KiB a row at 64 columns, benchmarks/RESULTS.md): the cap bounds what one claim takes from /predict.
    score_max_rows: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _a_full_request_fits_the_burst(self) -> GatewaySettings:
        if self.measurements_burst_rows < self.measurements_max_rows:
            raise ValueError(
                f"MEASUREMENTS_BURST_ROWS ({self.measurements_burst_rows}) must be at least MEASUREMENTS_MAX_ROWS "
                f"({self.measurements_max_rows}): a request at the cap could never pass"
            )
        return self


class PreprocessSettings(ConsumerSettings):
    service_name: str = "preprocess"
    consumer_group: str = "flts-preprocess"


class TrainSettings(ConsumerSettings):
    service_name: str = "train"
    model_type: NetworkType = "GRU"
    consumer_group: str = ""
    torch_num_threads: int = 1
    device: str = "auto"

    @model_validator(mode="after")
    def _group_per_model_type(self) -> TrainSettings:
        if not self.consumer_group:
            self.consumer_group = f"flts-train-{self.model_type.lower()}"
        return self


class NonmlSettings(ConsumerSettings):
    service_name: str = "nonml"
    consumer_group: str = "flts-train-prophet"
    prophet_workers: int = 2


class EvalSettings(ConsumerSettings):
    service_name: str = "eval"
    consumer_group: str = "flts-eval"
    decision_poll_seconds: float = 5.0


class InferenceSettings(ConsumerSettings, AuthSettings):
    """consumer_group is a prefix here: every replica joins a group of its own, so each hears every champion."""

    service_name: str = "inference"
    consumer_group: str = "flts-inference"
    http_host: str = "127.0.0.1"
    http_port: int = 8001
    model_threads: int = 1  # ONNX Runtime threads per forward pass (flts.models.exported)
    model_cache_dir: Path = Path("/tmp/flts-models")
    # A batch claim of a lineage waits this long for the lineage's decision (and champion) before it is scored
    # with the identifier's current champion, or dead-lettered when there is none.
    scoring_wait_seconds: float = Field(900.0, ge=0)
    # A replica given a `measurements` partition rebuilds its series' windows from at most this many rows before
    # the committed offset (inference_container.streaming); 0: it starts from the end of each lineage's data.
    stream_lookback_rows: int = Field(10_000, ge=0)
