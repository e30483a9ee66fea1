"""Seconds from starting a new inference replica to /readyz 200 (champion loaded from the registry).

Needs the local stack with a champion (e.g. after `make demo`); starts extra replicas on a spare port.

    .venv/bin/python benchmarks/bench_inference_start.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flts.stack.config import StackConfig, stack_environment

ROOT = Path(__file__).resolve().parents[1]


def ready_after(port: int, timeout: float) -> float:
    env = {**os.environ, **stack_environment(StackConfig()), "HTTP_PORT": str(port), "LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    replica = subprocess.Popen([sys.executable, "-m", "inference_container.service"], env=env, cwd=ROOT)
    try:
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"replica not ready within {timeout}s")
    finally:
        replica.terminate()
        replica.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "inference_start.json")
    args = parser.parse_args()
    seconds = [round(ready_after(args.port, 120), 2) for _ in range(args.runs)]
    result = {"seconds_to_ready": seconds, "target_seconds": 10}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
