"""First-run installs, cached: Apache Kafka's jars from Maven Central, MinIO built from its Go module."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from flts.stack.config import KAFKA_VERSION, LOG4J_VERSION, MINIO_MODULE_VERSION, StackConfig


class InstallError(RuntimeError):
    pass


# log4j-slf4j-impl is the SLF4J binding Kafka ships only in its tarball; without it the broker logs nothing.
KAFKA_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flts</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"""


def find_tool(name: str, *fallbacks: Path) -> str:
    found = shutil.which(name) or next((str(p) for p in fallbacks if p.is_file()), None)
    if not found:
        raise InstallError(f"`{name}` is needed for the local stack and is not on PATH")
    return found


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    return find_tool("java", *([Path(home) / "bin" / "java"] if home else []))


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialise installs between concurrent `up`s (two sessions, or tests and a shell)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run_with_progress(
    console: Console, description: str, command: Sequence[str], log_file: Path, cwd: Path, env: dict[str, str]
) -> None:
    """Run a long install step showing a spinner, the elapsed time and the latest line of its log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[last]}"),
    )
    with log_file.open("w") as log, Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, last="")
        process = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(0.5)
            lines = log_file.read_text(errors="replace").strip().splitlines()
            progress.update(task, last=lines[-1][:80] if lines else "")
        progress.update(task, last="done" if process.returncode == 0 else f"failed ({process.returncode})")
    if process.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise InstallError(f"{description} failed (exit {process.returncode}); log {log_file}:\n{tail}")


def ensure_kafka_libs(config: StackConfig, console: Console) -> Path:
    """Resolve the broker's class path with Maven once (a throw-away pom in the cache)."""
    libs = config.kafka_libs
    with _lock(config.cache_dir / "locks" / "kafka.lock"):
        if any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            return libs
        resolve_dir = config.cache_dir / "kafka-resolve"
        resolve_dir.mkdir(parents=True, exist_ok=True)
        (resolve_dir / "pom.xml").write_text(KAFKA_POM)
        staging = libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        console.print(f"[bold]Apache Kafka {KAFKA_VERSION}[/]: resolving its jars from Maven Central (first run only)")
        _run_with_progress(
            console,
            f"mvn dependency:copy-dependencies kafka_2.13:{KAFKA_VERSION}",
            [find_tool("mvn"), "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            config.cache_dir / "logs" / "kafka-resolve.log",
            resolve_dir,
            dict(os.environ),
        )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    return libs


def ensure_kafka_tools(config: StackConfig, console: Console) -> Path:
    """Kafka's command-line tools' jar (ConsoleProducer, ConsoleConsumer, ...), which the broker's own class path
    lacks, fetched with Maven once; run a tool with `java -cp '<libs>/*:<this jar>' <class>`."""
    libs = ensure_kafka_libs(config, console)
    target = libs.parent / "tools"
    with _lock(config.cache_dir / "locks" / "kafka-tools.lock"):
        if not any(target.glob(f"kafka-tools-{KAFKA_VERSION}.jar")):
            artifact = f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}"
            _run_with_progress(
                console,
                f"mvn dependency:copy {artifact}",
                [
                    find_tool("mvn"),
                    "-q",
                    "-B",
                    "dependency:copy",
                    f"-Dartifact={artifact}",
                    f"-DoutputDirectory={target}",
                ],
                config.cache_dir / "logs" / "kafka-tools-resolve.log",
                config.cache_dir,
                dict(os.environ),
            )
    return target / f"kafka-tools-{KAFKA_VERSION}.jar"


def ensure_minio(config: StackConfig, console: Console) -> Path:
    """Build MinIO from its Go module once (its community edition ships no binaries any more)."""
    binary = config.minio_binary
    with _lock(config.cache_dir / "locks" / "minio.lock"):
        if binary.is_file():
            return binary
        go = find_tool("go", Path("/usr/local/go/bin/go"))
        console.print(
            "[bold]MinIO[/]: building from source with `go install` (first run only; "
            "several minutes and a few GB of memory on 2 cores)"
        )
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOFLAGS": "-trimpath",
            "GOBIN": str(binary.parent),
        }
        _run_with_progress(
            console,
            f"go install github.com/minio/minio@{MINIO_MODULE_VERSION}",
            [go, "install", f"github.com/minio/minio@{MINIO_MODULE_VERSION}"],
            config.cache_dir / "logs" / "minio-build.log",
            config.cache_dir,
            env,
        )
    return binary


# What `mlflow server` itself would create: its tables plus the Default experiment, whose artifacts
# go through the server's proxy (`mlflow-artifacts:/`) to the --artifacts-destination bucket.
_CREATE_MLFLOW_DB = """
import sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
SqlAlchemyStore("sqlite:///" + sys.argv[1], "mlflow-artifacts:/")
"""


def ensure_empty_mlflow_database(path: Path, console: Console) -> Path:
    """Create, once per MLflow version, an empty migrated tracking database to copy into fresh states."""
    with _lock(path.with_name("db.lock")):
        if path.is_file():
            return path
        staging = path.with_name("empty.db.partial")
        staging.unlink(missing_ok=True)
        _run_with_progress(
            console,
            "creating an empty MLflow database (first run only)",
            [sys.executable, "-c", _CREATE_MLFLOW_DB, str(staging)],
            path.with_name("create-db.log"),
            path.parent,
            dict(os.environ),
        )
        staging.rename(path)
    return path
