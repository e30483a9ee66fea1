"""/predict under Locust at saturation, against a bare FastAPI endpoint with the same server settings.

Needs a running inference service with a champion (e.g. after `make demo`). Loopback only; every
Locust run is bounded by --seconds and a hard subprocess timeout.

    .venv/bin/python benchmarks/bench_predict.py --inference http://127.0.0.1:8001 --seconds 30 --users 16
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def locust(host: str, users: int, seconds: int) -> dict[str, float]:
    if not host.startswith(("http://127.", "http://localhost")):
        raise SystemExit("load tests target loopback addresses only")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "run"
        command = [
            str(Path(sys.executable).parent / "locust"),
            "-f",
            str(ROOT / ".helm" / "files" / "locustfile.py"),
            "--headless",
            "--only-summary",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            host,
            "--csv",
            str(prefix),
        ]
        subprocess.run(command, check=False, timeout=seconds + 60, capture_output=True)
        with open(f"{prefix}_stats.csv") as handle:
            row = next(r for r in csv.DictReader(handle) if r["Name"] == "/predict")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50_ms": float(row["50%"]),
        "p99_ms": float(row["99%"]),
    }


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} never answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inference", default="http://127.0.0.1:8001")
    parser.add_argument("--bare-port", type=int, default=8099)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json")
    args = parser.parse_args()

    wait_ready(f"{args.inference}/readyz")
    bare = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bare_app.py"), str(args.bare_port)])
    try:
        wait_ready(f"http://127.0.0.1:{args.bare_port}/docs")
        results = {
            "bare_fastapi": locust(f"http://127.0.0.1:{args.bare_port}", args.users, args.seconds),
            "inference": locust(args.inference, args.users, args.seconds),
        }
    finally:
        bare.terminate()
        bare.wait(timeout=10)
    results["ratio_rps"] = results["inference"]["rps"] / results["bare_fastapi"]["rps"]
    results["settings"] = {
        "users": args.users,
        "seconds": args.seconds,
        "server": "uvicorn, 1 worker, 1 ONNX Runtime thread",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
