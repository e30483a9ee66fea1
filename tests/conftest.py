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

from flts.config import CommonSettings
from flts.stack import StackConfig, down, stack_environment, status, up

STACK_MARKERS = ("integration", "e2e")
pytest_plugins = ["serving_models"]


@pytest.fixture(scope="session")
def stack_config() -> StackConfig:
    """The test stack's ports; FLTS_TEST_PORT_OFFSET (e.g. 500) moves them, and its state, for a second
    test session on the same machine."""
    offset = int(os.environ.get("FLTS_TEST_PORT_OFFSET", "0"))
    return StackConfig(
        state_dir=Path(f"~/.cache/flts/test-state{f'-{offset}' if offset else ''}"),
        kafka_port=29092 + offset,
        kafka_controller_port=29093 + offset,
        minio_port=29000 + offset,
        minio_console_port=29001 + offset,
        mlflow_port=25000 + offset,
        gateway_port=28000 + offset,
        inference_port=28001 + offset,
        metrics_base_port=29100 + offset,
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
