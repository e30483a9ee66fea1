""".helm/files/locustfile.py (compose and the chart both use it): realistic /predict bodies, and non-200
answers counted as failures.

Locust runs in subprocesses (importing it monkey-patches the interpreter with gevent) against a tiny
stand-in for the inference service that checks every body it receives.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deploy_support import REPO

from flts.data.generate import MEASURED_COLUMNS

LOCUSTFILE = REPO / ".helm" / "files" / "locustfile.py"
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
    seen: list[list[str]] = []
    authorizations: set[str | None] = set()

    def do_POST(self) -> None:
        self.authorizations.add(self.headers.get("Authorization"))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        problems = window_problems(body) if self.path == "/predict" else ["wrong path"]
        self.seen.append(problems)
        status = 422 if problems else self.status
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
    handler = type("Stub", (_Stub,), {"seen": [], "status": 200, "authorizations": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()


def run_locust(host: str, tmp_path: Path, api_key: str = "") -> subprocess.CompletedProcess[str]:
    # A few seconds of load is enough: the test checks counts and outcomes, not timings.
    return subprocess.run(
        [
            *(str(LOCUST), "-f", str(LOCUSTFILE), "--host", host, "--csv", str(tmp_path / "run")),
            *("--headless", "-u", "4", "-r", "4", "--run-time", "8", "--only-summary", "--stop-timeout", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "FLTS_API_KEY": api_key},
    )


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
    stats = (tmp_path / "run_stats.csv").read_text().splitlines()
    header, predict = stats[0].split(","), next(s for s in stats if "/predict" in s).split(",")
    row = dict(zip(header, predict, strict=True))
    assert int(row["Failure Count"]) == int(row["Request Count"]) > 0
