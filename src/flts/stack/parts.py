"""The three parts of the local stack: how each is installed, configured, started, probed and versioned."""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import mmap
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from rich.console import Console

from flts.kafka_users import ADMIN_USER
from flts.stack import install
from flts.stack.config import KAFKA_VERSION, StackConfig, common_settings, kafka_password, load_or_create_credentials
from flts.stack.procs import port_open

# Console only: the stack captures each part's output in <state>/logs/<part>.log.
KAFKA_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def new_cluster_id() -> str:
    """A Kafka cluster id in Kafka's own Uuid text form (url-safe base64 of 16 bytes, no padding). Like Kafka's
    Uuid.randomUuid, never one that starts with "-": the storage tool would read it as an option (1 in 64)."""
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return cluster_id


SCRAM_MECHANISM = "SCRAM-SHA-512"


def render_server_properties(config: StackConfig, data_dir: Path, admin_password: str | None = None) -> str:
    """A single-node KRaft broker+controller on loopback, sized for one machine.

    With ``admin_password`` (``kafka_sasl``) clients log in with SASL/SCRAM and the StandardAuthorizer
    allows only what ACLs grant (flts.kafka_users). The controller listener stays PLAINTEXT on loopback: the
    broker talks to its own controller as ANONYMOUS, so that principal is a super user, reachable only there.
    """
    client = "SASL_PLAINTEXT" if admin_password else "PLAINTEXT"
    broker = f"{client}://{config.host}:{config.kafka_port}"
    controller = f"CONTROLLER://{config.host}:{config.kafka_controller_port}"
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{config.host}:{config.kafka_controller_port}",
        "listeners": f"{broker},{controller}",
        "advertised.listeners": f"{broker},{controller}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{client}:{client}",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
    }
    if admin_password:
        properties |= {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN_USER}" password="{admin_password}";'
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN_USER};User:ANONYMOUS",
        }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


class Part(ABC):
    """One process of the stack; its files live in ``<state>/<name>/``."""

    name: str
    title: str

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.home = config.state_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.config.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.config.logs_dir / f"{self.name}.log"

    @property
    @abstractmethod
    def ports(self) -> tuple[int, ...]: ...

    @property
    @abstractmethod
    def endpoint(self) -> str: ...

    @abstractmethod
    def install(self, console: Console) -> None:
        """Fetch or build what is missing from the cache (slow once, then a no-op)."""

    @abstractmethod
    def configure(self) -> None:
        """Write the part's files in its state dir, just before it starts."""

    @abstractmethod
    def command(self) -> list[str]: ...

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    def ready(self) -> bool: ...

    @abstractmethod
    def version(self) -> str:
        """The installed version (known without starting it)."""

    def running_version(self) -> str:
        """The version the running process reports about itself."""
        return self.version()


class KafkaPart(Part):
    name = "kafka"
    title = "Apache Kafka"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.config.kafka_port, self.config.kafka_controller_port)

    @property
    def endpoint(self) -> str:
        return self.config.kafka_bootstrap

    def _java(self, *args: str, heap: str = "256m") -> list[str]:
        return [
            install.java(),
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{self.config.kafka_libs}/*",
            *args,
        ]

    def install(self, console: Console) -> None:
        install.ensure_kafka_libs(self.config, console)

    def configure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        admin_password = kafka_password(self.config, ADMIN_USER) if self.config.kafka_sasl else None
        self.properties_file.write_text(render_server_properties(self.config, self.data_dir, admin_password))
        self.log4j_file.write_text(KAFKA_LOG4J2)
        if (self.data_dir / "meta.properties").exists():
            return
        # With SASL the admin is formatted into the storage: the only user that can exist before the broker runs.
        add_admin = ["--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={admin_password}]"]
        formatted = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                f"--cluster-id={new_cluster_id()}",
                "-c",
                str(self.properties_file),
                *(add_admin if admin_password else []),
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise install.InstallError(
                f"kafka: formatting {self.data_dir} failed:\n{formatted.stdout}{formatted.stderr}"
            )

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.properties_file), heap=self.config.kafka_heap)

    def ready(self) -> bool:
        if not port_open(self.config.host, self.config.kafka_port):
            return False
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**common_settings(self.config).kafka_client_config(), "log_level": 0})
        try:
            admin.list_topics(timeout=3)
        except KafkaException:
            return False
        return True

    def cluster_id(self) -> str | None:
        with contextlib.suppress(OSError):
            for line in (self.data_dir / "meta.properties").read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        return None

    def version(self) -> str:
        jars = sorted(self.config.kafka_libs.glob("kafka_2.13-*.jar"))
        return jars[-1].stem.removeprefix("kafka_2.13-") if jars else f"{KAFKA_VERSION} (not installed)"

    def running_version(self) -> str:
        """What the broker printed at start-up (AppInfoParser's `Kafka version: X`)."""
        found = None
        with contextlib.suppress(OSError), self.log_file.open(errors="replace") as log:
            for line in log:
                if "Kafka version: " in line:
                    found = line.split("Kafka version: ", 1)[1].split()[0]
        return found or self.version()


class MinioPart(Part):
    name = "minio"
    title = "MinIO"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.config.minio_port, self.config.minio_console_port)

    @property
    def endpoint(self) -> str:
        return self.config.s3_endpoint

    def install(self, console: Console) -> None:
        install.ensure_minio(self.config, console)

    def configure(self) -> None:
        (self.home / "data").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.config.minio_binary),
            "server",
            str(self.home / "data"),
            "--address",
            f"{self.config.host}:{self.config.minio_port}",
            "--console-address",
            f"{self.config.host}:{self.config.minio_console_port}",
        ]

    def env(self) -> dict[str, str]:
        credentials = load_or_create_credentials(self.config)
        return {
            **os.environ,
            "MINIO_ROOT_USER": credentials.access_key_id,
            "MINIO_ROOT_PASSWORD": credentials.secret_access_key,
            "MINIO_UPDATE": "off",
        }

    def ready(self) -> bool:
        return http_ok(f"{self.endpoint}/minio/health/ready")

    def version(self) -> str:
        binary = self.config.minio_binary
        if not binary.is_file():
            return "not installed"
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout
        release = re.search(r"minio version (RELEASE\S+)", out)
        return release.group(1) if release else f"{self._module_version(binary)} (source build)"

    @staticmethod
    def _module_version(binary: Path) -> str:
        """The Go module version from the binary's build info (a `go install` build has no release tag)."""
        needle = b"mod\tgithub.com/minio/minio\t"
        with binary.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            start = data.find(needle)
            if start < 0:
                return "unknown"
            start += len(needle)
            return data[start : data.find(b"\t", start)].decode(errors="replace")


class MlflowPart(Part):
    name = "mlflow"
    title = "MLflow"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.config.mlflow_port,)

    @property
    def endpoint(self) -> str:
        return self.config.mlflow_uri

    @property
    def database(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def empty_database(self) -> Path:
        return self.config.cache_dir / f"mlflow-{self.version()}" / "empty.db"

    def install(self, console: Console) -> None:
        install.ensure_empty_mlflow_database(self.empty_database, console)

    def configure(self) -> None:
        """Start from a copy of an empty, migrated database: a fresh server skips ~10 s of migrations."""
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.database.exists():
            shutil.copyfile(self.empty_database, self.database)

    def command(self) -> list[str]:
        venv_mlflow = Path(sys.executable).parent / "mlflow"
        executable = str(venv_mlflow) if venv_mlflow.is_file() else install.find_tool("mlflow")
        return [
            executable,
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.database}",
            "--artifacts-destination",
            f"s3://{common_settings(self.config).bucket_mlflow}",
            "--host",
            self.config.host,
            "--port",
            str(self.config.mlflow_port),
            "--workers",
            "1",
        ]

    def env(self) -> dict[str, str]:
        settings = common_settings(self.config, "mlflow")  # its own S3 user: the only one of the mlflow bucket
        return {
            **os.environ,
            "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url,
            "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value(),
            "AWS_DEFAULT_REGION": settings.aws_region,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
        }

    def ready(self) -> bool:
        return http_ok(f"{self.endpoint}/health")

    def version(self) -> str:
        return importlib.metadata.version("mlflow")

    def running_version(self) -> str:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/version", timeout=2) as response:
                return response.read().decode().strip()
        except (urllib.error.URLError, OSError):
            return self.version()
