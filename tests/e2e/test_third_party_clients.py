"""Clients FLTS did not write, against the real stack (every service a process, auth off as `flts stack up`
runs it) once the e2e lineage has a champion:

- the earlier system's Locust client's requests (`earlier_locustfile.py`) run by the real `locust` CLI: zero
  failures, the download being the global identifier's newest lineage's test split;
- Kafka's own console tools (ConsoleProducer, ConsoleConsumer from the kafka-tools jar, run with `java -cp`)
  producing measurements in the documented JSON and reading `forecasts` read_committed: one forecast per row.

This module sorts after test_pipeline.py on purpose: its rows extend the global series, after the row that
test_pipeline sends.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest
from pandas.tseries.frequencies import to_offset
from rich.console import Console

from flts.data.generate import MEASURED_COLUMNS
from flts.messages import Forecast
from flts.stack.install import ensure_kafka_tools, java
from flts.storage import ObjectStore

pytestmark = pytest.mark.e2e

LOCUST = Path(sys.executable).parent / "locust"
LOCUSTFILE = Path(__file__).with_name("earlier_locustfile.py")
ROWS = 5


def _locust_stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def test_the_earlier_systems_locust_client_gets_no_failure(first_run, services, settings, tmp_path):
    env = {**os.environ, "GATEWAY_BASE": services.gateway_url, "PREDICT_URL": f"{services.inference_url}/predict"}
    command = [
        *(str(LOCUST), "-f", str(LOCUSTFILE), "--host", services.inference_url, "--csv", str(tmp_path / "run")),
        *("--headless", "-u", "4", "-r", "4", "-t", "15s", "--only-summary", "--stop-timeout", "2"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = _locust_stats(tmp_path / "run_stats.csv")
    assert int(stats["Aggregated"]["Failure Count"]) == 0, stats
    assert int(stats["predict"]["Request Count"]) > 10, stats
    assert int(stats["download (warm-up)"]["Request Count"]) == 4, stats

    # What it downloaded: the test split of global's newest lineage (the one GET /lineages lists first).
    newest = httpx.get(f"{services.gateway_url}/lineages", timeout=60).json()["lineages"][0]["config_hash"]
    served = httpx.get(f"{services.gateway_url}/download/processed-data/test_processed_data.parquet", timeout=60)
    split = ObjectStore(settings).get_bytes(f"s3://{settings.bucket_processed}/global/{newest}/test.parquet")
    assert served.status_code == 200 and served.content == split
    assert len(pd.read_parquet(io.BytesIO(served.content))) > 0


# As Kafka's scripts log their tools (config/tools-log4j2.yaml): warnings and errors on stderr, stdout is the data.
TOOLS_LOG4J2 = """rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
"""


@pytest.fixture(scope="module")
def kafka_tool(services, tmp_path_factory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run one of Kafka's console tools as `kafka-<tool>.sh` does: its class on the broker's class path."""
    classpath = f"{services.kafka_libs}/*:{ensure_kafka_tools(services, Console(stderr=True))}"
    log_config = tmp_path_factory.mktemp("kafka-tools") / "log4j2.properties"
    log_config.write_text(TOOLS_LOG4J2)

    def run(tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [
            *(java(), "-Xmx256m", f"-Dlog4j2.configurationFile={log_config}", "-cp", classpath, tool),
            *("--bootstrap-server", services.kafka_bootstrap, *args),
        ]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=False)

    return run


def test_kafka_console_tools_rows_in_one_forecast_each_out(first_run, kafka_tool, client, dataset, settings):
    """Rows keyed by identifier, in the README's JSON, from kafka-console-producer; forecasts read back with
    kafka-console-consumer --isolation-level read_committed from the beginning: exactly one for each row."""
    champion = first_run["status"]["champion"]
    last = pd.Timestamp(client.predict({})["last_row_ts"])  # the newest row the replica knows for global
    step = pd.Timedelta(to_offset(first_run["status"]["preprocessed"]["frequency"]))
    cells = pd.read_csv(dataset[1]).tail(ROWS)[list(MEASURED_COLUMNS)]
    # From two steps on: a row an earlier test sent to /measurements may still be on its way to the window (its
    # step, last + 1, would make our first row late); a skipped step is filled, as preprocessing fills it.
    times = [last + step * (n + 2) for n in range(ROWS)]
    lines = [
        "global\t"
        + json.dumps(
            {
                "schema_version": 1,
                "identifier": "global",
                "ts": ts.isoformat().replace("+00:00", "Z"),
                "values": {name: None if pd.isna(value) else float(value) for name, value in row.items()},
            }
        )
        for ts, (_, row) in zip(times, cells.iterrows(), strict=True)
    ]
    produced = kafka_tool(
        "org.apache.kafka.tools.ConsoleProducer",
        *("--topic", settings.topic_measurements, "--property", "parse.key=true", "--property", "key.separator=\t"),
        stdin="\n".join(lines) + "\n",
    )
    assert produced.returncode == 0, produced.stderr[-3000:]

    # The tool gives up after --timeout-ms without a message: on a loaded machine a fetch can take seconds, so it
    # gets 30 s, and the whole read is tried again until every row's forecast is there (or 5 minutes passed).
    deadline = time.monotonic() + 300
    while True:
        consumed = kafka_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            *("--topic", settings.topic_forecasts, "--from-beginning", "--isolation-level", "read_committed"),
            *("--timeout-ms", "30000", "--max-messages", "100000"),
        )
        forecasts = [Forecast.from_bytes(line.encode()) for line in consumed.stdout.splitlines() if line.strip()]
        ours = [f for f in forecasts if f.identifier == "global" and pd.Timestamp(f.last_observed) in times]
        if {pd.Timestamp(f.last_observed) for f in ours} == set(times) or time.monotonic() > deadline:
            break
        time.sleep(2)
    counts = Counter(pd.Timestamp(f.last_observed) for f in ours)
    assert counts == Counter(times), (counts, consumed.stderr[-2000:])
    assert {f.model_version for f in ours} == {champion["model_version"]}
