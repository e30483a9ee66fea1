"""The gateway process's memory under its request limits, on the real stack (Kafka, MinIO, MLflow): the process is
`python -m gateway_container.service` with its default limits, and its peak RSS (VmHWM in /proc/<pid>/status) is
held to the budgets the README states (**Limits.**).

`POST /measurements` at its limits (the row cap as CSV, the byte limit as JSON) and far past them (a chunked body of
200 MB, the issue's 46.6 MB body of 200,000 rows) adds at most `MEASUREMENTS_BUDGET_MIB` to what the warm process
held, and publishes exactly the rows it accepted; an upload at every cap of `POST /datasets` at once (1,000,000 rows,
64 columns, just under 200 MiB) keeps the whole process under `UPLOAD_BUDGET_MIB`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from integration_support import wait_until_healthy

from flts.config import load_pipeline_config
from flts.data.generate import generate_lte_dataset
from flts.settings import GatewaySettings
from flts.stack import StackConfig

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# The budgets the README states (**Limits.**).
MEASUREMENTS_BUDGET_MIB = 64  # over the warm process's peak, for every /measurements request at or past its limits
UPLOAD_BUDGET_MIB = 2_560  # the whole process's peak through an upload at every cap at once

SETTINGS = GatewaySettings(auth_enabled=False)
LIMITS = load_pipeline_config(SETTINGS.pipeline_config).limits  # what the process reads
IDENTIFIER = "memtest-cell"


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen
    topics: dict[str, str]
    kafka: str

    def memory_mib(self, field: str = "VmHWM") -> float:
        """The process's peak (VmHWM) or current (VmRSS) resident memory, MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    def post(self, path: str, **kwargs) -> httpx.Response | None:
        """The answer, or None when the gateway closed the connection before the client had sent the whole body
        (it refused the rest of it unread: Connection: close)."""
        try:
            return httpx.post(f"{self.url}{path}", timeout=600, **kwargs)
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
            return None

    def metric(self, name: str, labels: str) -> float:
        for line in httpx.get(f"{self.url}/metrics/", timeout=30).text.splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.split()[-1])
        return 0.0

    def published(self, topic: str) -> int:
        """Messages on one of the process's own topics (one partition; no transactions: the high watermark)."""
        consumer = Consumer({"bootstrap.servers": self.kafka, "group.id": f"memtest-{uuid.uuid4().hex}"})
        try:
            return consumer.get_watermark_offsets(TopicPartition(self.topics[topic], 0), timeout=30)[1]
        finally:
            consumer.close()


@pytest.fixture
def gateway(stack_config: StackConfig, stack_env: dict[str, str], tmp_path: Path) -> Iterator[GatewayProcess]:
    """A fresh gateway process (its peak RSS is its own) on topics of its own, so nothing downstream reads them."""
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "TOPIC_MEASUREMENTS": f"memtest-measurements-{suffix}",
        "TOPIC_DATASET_UPLOADED": f"memtest-dataset-uploaded-{suffix}",
    }
    kafka = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    admin = AdminClient({"bootstrap.servers": kafka})
    for future in admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in topics.values()]
    ).values():
        future.result(timeout=30)
    port = stack_config.gateway_port + 22  # in the stack's port block, beside test_auth_stack's +20 and +21
    env = {
        **os.environ,
        **stack_env,
        **topics,
        "AUTH_ENABLED": "false",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
    }
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway_container.service"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy("the gateway", url, process, log_path)
        yield GatewayProcess(url, process, topics, kafka)
        assert process.poll() is None, f"the gateway died:\n{log_path.read_text()[-3000:]}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _measurements(gateway: GatewayProcess, content: object, content_type: str) -> httpx.Response | None:
    return gateway.post(
        f"/measurements?identifier={IDENTIFIER}", content=content, headers={"content-type": content_type}
    )


def json_body_within(records: list[dict], max_bytes: int) -> tuple[bytes, int]:
    """As many rows as a JSON body of at most ``max_bytes`` holds, and their count."""
    rows, size = [], len(json.dumps({"identifier": IDENTIFIER, "rows": []}))
    for record in records:
        row = json.dumps(record)
        if size + len(row) + 2 > max_bytes:
            break
        rows.append(row)
        size += len(row) + 2
    return f'{{"identifier": "{IDENTIFIER}", "rows": [{", ".join(rows)}]}}'.encode(), len(rows)


def csv_chunks(rows: bytes, total_bytes: int, chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """A CSV body of ``total_bytes`` made of ``rows`` over and over, a chunk at a time (never held whole)."""
    header, _, body = rows.partition(b"\n")
    block = (body * (chunk_bytes // len(body) + 1))[:chunk_bytes]
    block = block[: block.rfind(b"\n") + 1]
    yield header + b"\n"
    for _ in range(total_bytes // len(block)):
        yield block


def test_measurements_at_and_far_past_their_limits_stay_within_the_gateways_memory_budget(gateway):
    train, _ = generate_lte_dataset(train_rows=SETTINGS.measurements_max_rows, test_rows=200, seed=11)
    at_the_cap = train.to_csv(index=False).encode()
    assert len(at_the_cap) <= SETTINGS.measurements_max_bytes
    records = json.loads(train.to_json(orient="records", date_format="iso"))
    at_the_byte_limit, json_rows = json_body_within(records, SETTINGS.measurements_max_bytes)
    for warm_up in (train.head(2).to_csv(index=False).encode(), json_body_within(records[:2], 1_000)[0]):
        response = _measurements(gateway, warm_up, "text/csv" if warm_up.startswith(b"time") else "application/json")
        assert response is not None and response.status_code == 202, response and response.text
    warm = gateway.memory_mib()
    refused_before = sum(
        gateway.metric("flts_gateway_measurement_refusals_total", f'reason="{r}"')
        for r in ("too_large", "too_many_rows")
    )

    csv_answer = _measurements(gateway, at_the_cap, "text/csv")
    json_answer = _measurements(gateway, at_the_byte_limit, "application/json")
    chunked = _measurements(gateway, csv_chunks(at_the_cap, 200 * MIB), "text/csv")
    issue_rows = (records * (200_000 // len(records) + 1))[:200_000]
    declared = _measurements(
        gateway, json.dumps({"identifier": IDENTIFIER, "rows": issue_rows}).encode(), "application/json"
    )
    peak = gateway.memory_mib()

    assert csv_answer is not None and csv_answer.json()["rows"] == SETTINGS.measurements_max_rows, csv_answer
    assert json_answer is not None and json_answer.json()["rows"] == json_rows, json_answer
    for refused in (chunked, declared):
        assert refused is None or refused.status_code == 413, refused.text
    refused_after = sum(
        gateway.metric("flts_gateway_measurement_refusals_total", f'reason="{r}"')
        for r in ("too_large", "too_many_rows")
    )
    assert refused_after == refused_before + 2
    assert gateway.published("TOPIC_MEASUREMENTS") == 2 + 2 + SETTINGS.measurements_max_rows + json_rows
    print(f"\ngateway peak RSS: warm {warm:.0f} MiB, after /measurements at and past its limits {peak:.0f} MiB")
    assert peak - warm <= MEASUREMENTS_BUDGET_MIB, f"{warm:.0f} -> {peak:.0f} MiB"


def upload_at_every_cap(path: Path) -> Path:
    """1,000,000 rows (limits.max_rows) of 64 columns (limits.max_columns), 2-digit cells: 209,000,000 bytes, just
    under MAX_UPLOAD_BYTES (200 MiB). Written a block at a time."""
    columns = LIMITS.max_columns - 1
    rng = np.random.default_rng(5)
    cells = [",".join(map(str, rng.integers(10, 100, columns))) for _ in range(997)]
    start = np.datetime64("2024-01-01T00:00:00")
    with path.open("w") as handle:
        handle.write("time," + ",".join(f"c{i:02d}" for i in range(columns)) + "\n")
        for first in range(0, LIMITS.max_rows, 100_000):
            rows = np.arange(first, min(first + 100_000, LIMITS.max_rows))
            times = (start + rows * np.timedelta64(120, "s")).astype(str)
            handle.write("".join(f"{t},{cells[(first + i) % len(cells)]}\n" for i, t in enumerate(times)))
    assert path.stat().st_size <= SETTINGS.max_upload_bytes
    return path


def test_an_upload_at_every_cap_stays_within_the_gateways_memory_budget(gateway, tmp_path):
    train = upload_at_every_cap(tmp_path / "train.csv")
    warm = gateway.memory_mib()
    with train.open("rb") as handle:
        response = gateway.post(
            "/datasets", params={"identifier": IDENTIFIER}, files={"train": ("train.csv", handle, "text/csv")}
        )
    peak = gateway.memory_mib()
    assert response is not None and response.status_code == 202, response and response.text
    assert response.json()["train"]["rows"] == LIMITS.max_rows
    assert gateway.published("TOPIC_DATASET_UPLOADED") == 1
    print(f"\ngateway peak RSS: warm {warm:.0f} MiB, through an upload at every cap {peak:.0f} MiB")
    assert peak <= UPLOAD_BUDGET_MIB, f"{warm:.0f} -> {peak:.0f} MiB"
