"""locust/locustfile.py (compose and the chart use its copy, .helm/files/locustfile.py, the same bytes:
tests/deploy/test_drift.py): realistic /predict bodies, non-200 answers counted as failures, and the thresholds on
the failure ratio and the 99th percentile that decide the run's exit code, in one process and distributed.

Locust runs in subprocesses (importing it monkey-patches the interpreter with gevent) against a tiny
stand-in for the inference service that checks every body it receives.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deploy_support import REPO

from flts.data.generate import MEASURED_COLUMNS

LOCUSTFILE = REPO / "locust" / "locustfile.py"
COLUMNS = set(MEASURED_COLUMNS)
LOCUST = Path(sys.executable).parent / "locust"


def window_problems(body: dict[str, Any]) -> list[str]:
    """What is wrong with a /predict body (one window of 10 rows, 2-minute steps, every column)."""
    problems = []
    rows = body.get("rows") or []
    if body.get("identifier") != "global":
        problems.append(f"identifier {body.get('identifier')!r}")
    if len(rows) != 10:
        problems.append(f"{len(rows)} rows")
    times = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in rows]
    if any(b - a != timedelta(minutes=2) for a, b in itertools.pairwise(times)):
        problems.append("rows are not consecutive 2-minute steps")
    for row in rows:
        if set(row) != COLUMNS | {"time"}:
            problems.append(f"columns {sorted(set(row) ^ (COLUMNS | {'time'}))}")
            break
        if not all(isinstance(row[c], float | int) and row[c] >= 0 for c in COLUMNS):
            problems.append("a non-numeric or negative measurement")
            break
    return problems


@pytest.mark.parametrize("source", ["flts", "built-in"])
def test_bodies_are_realistic_windows(source: str) -> None:
    """Both data sources: flts's generator (dev venv) and the fallback the Locust image uses."""
    block = "sys.modules['flts'] = None; " if source == "built-in" else ""
    code = (
        f"import sys, random, json; {block}sys.path.insert(0, {str(LOCUSTFILE.parent)!r}); "
        "import locustfile as l; rng = random.Random(3); "
        "print(json.dumps([l.request_body(rng) for _ in range(50)]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    for body in json.loads(result.stdout.splitlines()[-1]):
        assert not window_problems(body), window_problems(body)


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers Locust's FastHttpUser
    status = 200
    fail_every = 0  # every n-th request answers 503 (0: none)
    delay = 0.0  # seconds before each answer
    seen: list[list[str]] = []
    authorizations: set[str | None] = set()

    def do_POST(self) -> None:
        self.authorizations.add(self.headers.get("Authorization"))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        problems = window_problems(body) if self.path == "/predict" else ["wrong path"]
        self.seen.append(problems)
        failing = self.fail_every and len(self.seen) % self.fail_every == 0
        status = 422 if problems else 503 if failing else self.status
        time.sleep(self.delay)
        answer = json.dumps({"predictions": [{"time": "t", "down": 1.0}]} if status == 200 else {"detail": "x"})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type(
        "Stub", (_Stub,), {"seen": [], "status": 200, "authorizations": set(), "fail_every": 0, "delay": 0.0}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()


def run_locust(
    host: str, tmp_path: Path, *options: str, api_key: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A few seconds of load is enough: the test checks counts and outcomes, not timings.
    return subprocess.run(
        [
            *(str(LOCUST), "-f", str(LOCUSTFILE), "--host", host, "--csv", str(tmp_path / "run")),
            *("--headless", "-u", "4", "-r", "4", "--run-time", "8", "--only-summary", "--stop-timeout", "2"),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "FLTS_API_KEY": api_key, **(env or {})},
    )


def predict_stats(tmp_path: Path) -> dict[str, str]:
    """The /predict row of the run's --csv statistics."""
    stats = (tmp_path / "run_stats.csv").read_text().splitlines()
    header, predict = stats[0].split(","), next(s for s in stats if "/predict" in s).split(",")
    return dict(zip(header, predict, strict=True))


def test_locust_against_a_healthy_service(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    host, handler = stub
    result = run_locust(host, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(handler.seen) > 10 and not any(handler.seen), handler.seen[:3]
    assert handler.authorizations == {None}


def test_locust_sends_flts_api_key_as_a_bearer_token(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    host, handler = stub
    result = run_locust(host, tmp_path, api_key="flts_test-key")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert handler.authorizations == {"Bearer flts_test-key"}


def test_locust_counts_non_200_as_failures(stub: tuple[str, type[_Stub]], tmp_path: Path) -> None:
    host, handler = stub
    handler.status = 503
    result = run_locust(host, tmp_path)
    assert result.returncode != 0, "a run where every answer was a 503 must fail"
    row = predict_stats(tmp_path)
    assert int(row["Failure Count"]) == int(row["Request Count"]) > 0


@pytest.mark.parametrize(("max_failure_ratio", "passes"), [("0.1", False), ("0.5", True)])
def test_the_failure_ratio_threshold_decides_the_exit_code(
    stub: tuple[str, type[_Stub]], tmp_path: Path, max_failure_ratio: str, passes: bool
) -> None:
    """A quarter of the answers are 503s: over a 10 % threshold the run fails, within 50 % it passes (Locust alone
    fails a run on its first failure). Set from the environment, as compose and the chart would."""
    host, handler = stub
    handler.fail_every = 4
    result = run_locust(host, tmp_path, env={"FLTS_LOCUST_MAX_FAILURE_RATIO": max_failure_ratio})
    output = result.stdout + result.stderr
    row = predict_stats(tmp_path)
    assert 0 < int(row["Failure Count"]) < int(row["Request Count"]), row
    assert (result.returncode == 0) is passes, output[-3000:]
    assert ("threshold crossed" in output and "requests failed" in output) is not passes, output[-3000:]


@pytest.mark.parametrize(("max_p99_ms", "passes"), [("50", False), ("5000", True)])
def test_the_p99_threshold_decides_the_exit_code(
    stub: tuple[str, type[_Stub]], tmp_path: Path, max_p99_ms: str, passes: bool
) -> None:
    """Every answer takes 200 ms: a 50 ms limit on the 99th percentile fails the run, a 5 s one does not."""
    host, handler = stub
    handler.delay = 0.2
    result = run_locust(host, tmp_path, "--max-p99-ms", max_p99_ms)
    output = result.stdout + result.stderr
    assert int(predict_stats(tmp_path)["Failure Count"]) == 0
    assert (result.returncode == 0) is passes, output[-3000:]
    assert ("threshold crossed: the 99th percentile" in output) is not passes, output[-3000:]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("max_p99_ms", "passes"), [("50", False), ("5000", True)])
def test_distributed_the_master_judges_its_workers_requests(
    stub: tuple[str, type[_Stub]], tmp_path: Path, max_p99_ms: str, passes: bool
) -> None:
    """--master with one --worker: the master makes no request itself, and its exit code is the thresholds' verdict
    on the worker's (a master that judged its own would fail both runs: no request made)."""
    host, handler = stub
    handler.delay = 0.2
    port = str(_free_port())
    env = {**os.environ, "FLTS_LOCUST_MAX_P99_MS": max_p99_ms}
    master = subprocess.Popen(
        [
            *(str(LOCUST), "-f", str(LOCUSTFILE), "--host", host, "--headless", "--only-summary"),
            *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port),
            *("--expect-workers", "1", "--expect-workers-max-wait", "60"),
            *("-u", "4", "-r", "4", "--run-time", "8", "--stop-timeout", "2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=env,
    )
    worker = subprocess.Popen(
        [str(LOCUST), "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1", "--master-port", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=env,
    )
    try:
        output, _ = master.communicate(timeout=120)
        worker.wait(timeout=30)
    finally:
        for process in (master, worker):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len(handler.seen) > 5, output[-3000:]
    assert (master.returncode == 0) is passes, output[-3000:]
    assert ("threshold crossed: the 99th percentile" in output) is not passes, output[-3000:]
