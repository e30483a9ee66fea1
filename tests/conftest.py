"""Shared fixtures: the real local stack (Kafka, MinIO, MLflow) for tests marked `integration` or `e2e`.

The test stack has its own ports and state dir, so it never touches a developer's `flts stack up`.
It is started fresh once per session and stopped at the end; `stack_services` adds every pipeline
service as a process. Set FLTS_TEST_KEEP_STACK=1 to reuse a running test stack and leave it up
afterwards (fast edit-test loops).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from rich.console import Console

from flts.settings import CommonSettings
from flts.stack import StackConfig, down, stack_environment, status, up

STACK_MARKERS = ("integration", "e2e")
pytest_plugins = ["serving_models"]


@pytest.fixture(scope="session")
def stack_config() -> StackConfig:
    """The test stack's ports; FLTS_TEST_PORT_OFFSET (e.g. 500, any multiple of 10 up to 7000) moves them, and its
    state, for a second test session on the same machine."""
    offset = int(os.environ.get("FLTS_TEST_PORT_OFFSET", "0"))
    if offset:  # a block of 32 ports of its own per offset, so no two offsets share a port
        base = 10000 + offset // 10 * 32  # below the ephemeral range (32768-)
        ports = {"kafka": base, "minio": base + 2, "mlflow": base + 4, "gateway": base + 6, "metrics": base + 10}
    else:
        ports = {"kafka": 29092, "minio": 29000, "mlflow": 25000, "gateway": 28000, "metrics": 29100}
    return StackConfig(
        state_dir=Path(f"~/.cache/flts/test-state{f'-{offset}' if offset else ''}"),
        kafka_port=ports["kafka"],
        kafka_controller_port=ports["kafka"] + 1,
        minio_port=ports["minio"],
        minio_console_port=ports["minio"] + 1,
        mlflow_port=ports["mlflow"],
        gateway_port=ports["gateway"],
        inference_port=ports["gateway"] + 1,
        metrics_base_port=ports["metrics"],
    )


@pytest.fixture(scope="session")
def stack_env(stack_config: StackConfig) -> Iterator[dict[str, str]]:
    """Env vars (CommonSettings names) pointing at a running test stack."""
    console = Console(stderr=True)
    keep = os.environ.get("FLTS_TEST_KEEP_STACK") == "1"
    if keep and all(part.state == "running" for part in status(stack_config)):
        yield stack_environment(stack_config)
        return
    down(stack_config, console)  # whatever a killed session left behind
    shutil.rmtree(stack_config.state_dir, ignore_errors=True)
    try:
        up(stack_config, console)
        yield stack_environment(stack_config)
    finally:
        if not keep:
            down(stack_config, console)


@pytest.fixture(scope="session")
def stack_services(stack_config: StackConfig, stack_env: dict[str, str]) -> StackConfig:
    """Every pipeline service as a process on the test stack (stopped with it); URLs on the config."""
    up(stack_config, Console(stderr=True), services=True)
    return stack_config


@pytest.fixture(scope="session")
def common_settings(stack_env: dict[str, str]) -> CommonSettings:
    fields = CommonSettings.model_fields
    return CommonSettings(**{key.lower(): value for key, value in stack_env.items() if key.lower() in fields})


@pytest.fixture(autouse=True)
def _stack_for_marked_tests(request: pytest.FixtureRequest) -> None:
    if any(request.node.get_closest_marker(marker) for marker in STACK_MARKERS):
        request.getfixturevalue("stack_env")


@pytest.fixture(scope="session")
def read_topic() -> Callable[..., list[Any]]:
    """Read up to ``count`` messages of a topic from the beginning (a fresh group), parsed; ``timeout`` s at most."""

    def read(
        settings: CommonSettings, topic: str, count: int, parse: Callable[[bytes], Any], timeout: float = 30
    ) -> list[Any]:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while len(found) < count and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    found.append(parse(msg.value()))
        finally:
            consumer.close()
        return found

    return read
