"""Where the local stack lives (state, cache, ports), its generated credentials, and the env it hands out."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flts.kafka_users import ADMIN_USER, kafka_user
from flts.kafka_users import SERVICES as KAFKA_SERVICES
from flts.settings import CommonSettings
from flts.storage_users import access_key

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
# The Go proxy refuses MinIO's RELEASE.* tags (not semver), so the build pins a pseudo-version.
MINIO_MODULE_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"


class StackConfig(BaseSettings):
    """The local stack's layout; every field can be set as ``FLTS_STACK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FLTS_STACK_", extra="ignore", validate_default=True)

    state_dir: Path = Path("~/.local/state/flts/stack")
    cache_dir: Path = Path("~/.cache/flts")
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    minio_port: int = 19000
    minio_console_port: int = 19001
    mlflow_port: int = 15000
    gateway_port: int = 8000
    inference_port: int = 8001
    metrics_base_port: int = 9100
    kafka_heap: str = "512m"
    # SASL/SCRAM on the broker: every service logs in as its own Kafka user with ACLs (flts.kafka_users).
    # Takes effect on a new broker (`flts stack down --purge` first): the admin user is formatted into storage.
    kafka_sasl: bool = False
    start_timeout_s: float = 180.0
    stop_grace_s: float = 20.0

    @field_validator("state_dir", "cache_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().absolute()

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.env"

    @property
    def kafka_libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def minio_binary(self) -> Path:
        return self.cache_dir / "bin" / "minio"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.minio_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def inference_url(self) -> str:
        return f"http://{self.host}:{self.inference_port}"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


def load_or_create_credentials(config: StackConfig) -> Credentials:
    """Random S3 credentials made on first use and kept (mode 0600) so restarts keep the same data access."""
    path = config.credentials_file
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_id, secret = f"flts-{secrets.token_hex(8)}", secrets.token_urlsafe(30)
        body = f"AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another `up` won the race; read what it wrote
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
    values = dict(
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    return Credentials(values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])


def derived_secret(config: StackConfig, purpose: str) -> str:
    """A secret derived from the root secret, so nothing more is stored and every `up` makes the same users."""
    root = load_or_create_credentials(config)
    return hmac.new(root.secret_access_key.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def service_credentials(config: StackConfig, service: str) -> Credentials:
    """A service's own S3 user (flts.storage_users)."""
    return Credentials(access_key(service), derived_secret(config, f"s3-user:{service}"))


def kafka_password(config: StackConfig, user: str) -> str:
    """A Kafka user's SCRAM password (with ``kafka_sasl``): the admin's, or a service's (flts.kafka_users)."""
    return derived_secret(config, f"kafka-user:{user}")


def stack_environment(config: StackConfig, service: str | None = None) -> dict[str, str]:
    """The variables a service (or a test) sets to talk to this stack; names are CommonSettings fields.

    With ``service``, its own S3 user (and Kafka user, with ``kafka_sasl``); without, the root key and Kafka's
    admin (the stack itself, tests, an operator's shell).
    """
    credentials = service_credentials(config, service) if service else load_or_create_credentials(config)
    environment = {
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap,
        "S3_ENDPOINT_URL": config.s3_endpoint,
        "AWS_ACCESS_KEY_ID": credentials.access_key_id,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
        "MLFLOW_TRACKING_URI": config.mlflow_uri,
        "MLFLOW_S3_ENDPOINT_URL": config.s3_endpoint,
    }
    if config.kafka_sasl and (service is None or service in KAFKA_SERVICES):
        user = kafka_user(service) if service else ADMIN_USER
        environment |= {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": user,
            "KAFKA_SASL_PASSWORD": kafka_password(config, user),
        }
    return environment


def common_settings(config: StackConfig, service: str | None = None) -> CommonSettings:
    """CommonSettings pointing at this stack (topic and bucket names still come from the environment)."""
    fields = CommonSettings.model_fields
    environment = stack_environment(config, service)
    return CommonSettings(**{k.lower(): v for k, v in environment.items() if k.lower() in fields})
