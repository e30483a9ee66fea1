"""Settings (one class per service, from environment variables) and the pipeline config file.

Environment variable names are the upper-cased field names, with no prefix, so that
docker compose, the Helm chart and the local stack all set the same names; the
deployment drift test reads these classes to know what each service expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flts.models import types as model_types

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PIPELINE_CONFIG = REPO_ROOT / "config" / "pipeline.yaml"

# The model types are flts.models.types' table; these Literals are read from it (adding a type is one entry there).
# The neural model types (flts.models.recurrent): one trainer each (train_container, MODEL_TYPE).
NETWORK_MODEL_TYPES: tuple[str, ...] = model_types.NETWORK_TYPES
NetworkType = Literal[NETWORK_MODEL_TYPES]
# The statistical model types (flts.models.statistical): fitted by statsforecast, served without it.
STATISTICAL_MODEL_TYPES: tuple[str, ...] = model_types.STATISTICAL_TYPES
StatisticalType = Literal[STATISTICAL_MODEL_TYPES]
ModelType = Literal[model_types.MODEL_TYPE_NAMES]


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


# ---------------------------------------------------------------------------
# The pipeline config: preprocessing and model hyper-parameters, one YAML file.
# ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    time_column: str = "time"
    identifier_column: str | None = "identifier"
    feature_columns: list[str] | None = None
    target_columns: list[str] | None = None


class LimitsConfig(_Strict):
    """What one uploaded file may hold: checked at the gateway (and again by preprocess) before any work.

    They bound the cost of one tenant's upload for everyone: Prophet fits one model per column, windows
    grow with rows, and the text cells are parsed as timestamps.
    """

    max_columns: int = Field(64, ge=2)
    max_rows: int = Field(1_000_000, ge=1)
    max_header_bytes: int = Field(8192, ge=64)
    max_column_name_chars: int = Field(64, ge=1)
    max_cell_chars: int = Field(64, ge=8)


class OutlierConfig(_Strict):
    method: Literal["none", "iqr", "percentile"] = "none"
    iqr_k: float = 3.0
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5


class SplitConfig(_Strict):
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class SampleConfig(_Strict):
    """Optional down-sampling, applied by preprocess only (trainers never re-sample)."""

    max_train_rows: int | None = None
    max_test_rows: int | None = None


class PreprocessingConfig(_Strict):
    frequency: str | None = None
    imputation: Literal["linear", "ffill", "zero", "mean"] = "linear"
    max_gap_fill_steps: int = 30
    outliers: OutlierConfig = OutlierConfig()
    scaler: Literal["minmax", "standard", "robust", "maxabs"] = "minmax"
    time_features: list[Literal["hour", "day_of_week"]] = ["hour", "day_of_week"]
    lag_features: list[int] = []
    split: SplitConfig = SplitConfig()
    sample: SampleConfig = SampleConfig()


class WindowConfig(_Strict):
    input_seq_len: int = Field(10, ge=1)
    output_seq_len: int = Field(1, ge=1)


class RecurrentConfig(_Strict):
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    early_stopping_patience: int = 3
    seed: int = 42
    # direct | residual | relative: what the networks read and forecast (see flts.models.recurrent).
    form: Literal["direct", "residual", "relative"] = "relative"


class ProphetConfig(_Strict):
    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    yearly_seasonality: bool = False
    changepoint_prior_scale: float = 0.05
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    max_fit_rows: int | None = None


class BoostedConfig(_Strict):
    """LightGBM on the window's lags (flts.models.boosted): one booster per target column and horizon step."""

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    max_rounds: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(30, ge=0)  # on the validation windows; 0: all max_rounds
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    min_data_in_leaf: int = Field(20, ge=1)
    threads: int = Field(2, ge=1)
    seed: int = 42


class StatisticalConfig(_Strict):
    """AutoETS, AutoARIMA and Theta (flts.models.statistical), non-seasonal, one per target column."""

    # The most recent training rows each model is fitted on: the parameters settle long before the full
    # series, and AutoARIMA's search grows with it (13,600 rows: 5 s per column; 2,000: under 1 s).
    max_fit_rows: int = Field(2000, ge=10)


class BaselineConfig(_Strict):
    season_length_steps: int | None = None


class ModelsConfig(_Strict):
    recurrent: RecurrentConfig = RecurrentConfig()
    boosted: BoostedConfig = BoostedConfig()
    statistical: StatisticalConfig = StatisticalConfig()
    prophet: ProphetConfig = ProphetConfig()
    baselines: BaselineConfig = BaselineConfig()


class ScoreWeights(_Strict):
    rmse: float = 0.5
    mae: float = 0.3
    mse: float = 0.2


class EvaluationConfig(_Strict):
    # Each default is read from flts.models.types: the types on by default, and every type inference can serve
    # (SEASONAL_NAIVE and PROPHET are ranked, not served: their not_servable_because).
    expected_model_types: list[ModelType] = list(model_types.ON_BY_DEFAULT)
    promotable_model_types: list[ModelType] = list(model_types.SERVABLE_TYPES)
    decision_timeout_seconds: float = 900.0
    # While models still train, serve the best promotable one finished so far (persistence within seconds of
    # preprocessing), then upgrade as better ones finish; the final champion is the one eval would have waited
    # for. false: nothing is served until the lineage is decided.
    promote_interim: bool = True
    # A RUNNING run whose trainer has not beaten its heartbeat (every 30 s) for this long died with its
    # process (SIGKILL, OOM): eval marks it KILLED, so nothing stays RUNNING and eval need not wait for it.
    orphan_after_seconds: float = Field(180.0, gt=0)
    score_weights: ScoreWeights = ScoreWeights()


class InferenceConfig(_Strict):
    max_inference_length: int = Field(60, ge=1)
    max_batch_windows: int = Field(256, ge=1)
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # The micro-batcher in front of the model (one forward pass for concurrent requests).
    micro_batch_requests: int = Field(32, ge=1)
    micro_batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    queue_max_requests: int = Field(256, ge=1)
    request_timeout_seconds: float = Field(2.0, gt=0)
    # A request's work is its windows x the steps it asks for; a micro-batch's, the sum over its requests.
    # A batch holds at most max_batch_work (a request that would take it over waits for the next batch; one
    # over it alone is a 413). The default is max_batch_windows x max_inference_length: every request the
    # other limits admit is served, the largest alone (about 0.5 s for the default GRU on one core).
    max_batch_work: int = Field(256 * 60, ge=1)
    # A batch of at most this much work runs its forward pass on the event loop (no GIL hand-overs: faster on
    # a contended CPU); a heavier one on the model thread, so /healthz and the other requests are answered
    # meanwhile (256 window-steps: about 10 ms of the default GRU).
    loop_max_work: int = Field(256, ge=0)
    model_thread: bool = False  # true: every forward pass on the model thread, however light (loop_max_work 0)
    # Serve each target column with the model that won it on validation (eval's column_wins, persistence
    # included); false: the promoted model forecasts every column.
    serve_column_winners: bool = True
    # Every replica re-reads the registry's champion aliases this often and installs what differs (a lost
    # model-selected event, a failed download, an operator's rollback).
    champion_reconcile_seconds: float = Field(60.0, gt=0)
    # Champions a replica holds in memory (about 1-2 MiB each); beyond it the least recently used is dropped
    # and loaded again on its next request. 0: no limit.
    max_loaded_champions: int = Field(500, ge=0)
    # And at most this many bytes of model bundles (a column composite counts each member): the bound that holds
    # when champions differ in size. 0: no limit.
    max_loaded_champion_bytes: int = Field(1 << 30, ge=0)


class PipelineConfig(_Strict):
    data: DataConfig = DataConfig()
    limits: LimitsConfig = LimitsConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    windows: WindowConfig = WindowConfig()
    models: ModelsConfig = ModelsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    inference: InferenceConfig = InferenceConfig()

    @field_validator("evaluation")
    @classmethod
    def _expected_types_unique(cls, value: EvaluationConfig) -> EvaluationConfig:
        if len(set(value.expected_model_types)) != len(value.expected_model_types):
            raise ValueError("evaluation.expected_model_types has duplicates")
        return value

    def lineage_part(self) -> dict[str, Any]:
        """The part of the config that defines a lineage (together with the data's content hash)."""
        return {
            "data": self.data.model_dump(mode="json"),
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "windows": self.windows.model_dump(mode="json"),
        }


def load_pipeline_config(path: Path | str | None = None) -> PipelineConfig:
    source = Path(path or os.environ.get("PIPELINE_CONFIG") or DEFAULT_PIPELINE_CONFIG)
    raw = yaml.safe_load(source.read_text()) or {}
    return PipelineConfig.model_validate(raw)
