"""A new inference replica with one champion: seconds from start to /readyz 200 and its idle RSS; and the memory
each further champion adds (how a replica grows with identifiers).

Needs the local stack (`flts stack up`; the FLTS_STACK_* variables move its ports and state). Registers the
benchmarks' GRU (`serve_local.build`: the pipeline's default size) as the champion of a registry prefix of its
own, so each replica loads exactly one champion from MLflow whatever else the stack holds, then starts replicas
on a spare port, one after the other, as an HPA scale-out would. The growth per champion is measured in this
process: the same bundle loaded as `--champions` identifiers' models, as a replica holds them.

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
import uuid
from pathlib import Path

from serve_local import build

from flts.config import PipelineConfig
from flts.layout import GRAPH_FILE
from flts.settings import InferenceSettings
from flts.stack.config import StackConfig, stack_environment
from flts.tracking import TAG_CONFIG_HASH, TAG_MODEL_TYPE, Tracker

ROOT = Path(__file__).resolve().parents[1]


def register_champion(env: dict[str, str], model_dir: Path) -> str:
    """The benchmarks' GRU as the `global` champion of a fresh registry prefix; returns the prefix."""
    if not (model_dir / GRAPH_FILE).exists():  # a bundle from before graphs were exported is rebuilt
        model_dir.mkdir(parents=True, exist_ok=True)
        build(model_dir, PipelineConfig())
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    os.environ.update(env)
    tracker = Tracker(InferenceSettings(registered_model_prefix=prefix, mlflow_experiment=f"{prefix}-start"))
    config_hash = "b" * 64
    run_id = tracker.start_run(config_hash, "GRU", "global", "bench")
    tracker.log_model(run_id, model_dir)
    tracker.finish_run(run_id)
    version = tracker.register(run_id, "global", {TAG_CONFIG_HASH: config_hash, TAG_MODEL_TYPE: "GRU"})
    tracker.set_champion("global", version)
    return prefix


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def growth_per_champion(model_dir: Path, count: int) -> float:
    """MiB of RSS each further loaded champion adds (the benchmarks' GRU, `count` identifiers)."""
    from flts.predict import ModelIdentity, ServingModel

    def load(identifier: str) -> ServingModel:
        return ServingModel.load(model_dir, ModelIdentity(identifier, "GRU", "1", "bench", "0" * 64), 60)

    held = [load("warm-up")]  # the first load brings in ONNX Runtime and the model code
    before = rss_mib(os.getpid())
    held += [load(f"cell-{n}") for n in range(count)]
    return (rss_mib(os.getpid()) - before) / count


def start_replica(env: dict[str, str], port: int, timeout: float, idle_seconds: float) -> dict[str, float]:
    """Seconds to /readyz 200, and the RSS when ready and after `idle_seconds` without requests."""
    started = time.monotonic()
    replica = subprocess.Popen([sys.executable, "-m", "inference_container.service"], env=env, cwd=ROOT)
    try:
        while time.monotonic() - started < timeout and replica.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        ready = time.monotonic() - started
                        at_ready = rss_mib(replica.pid)
                        time.sleep(idle_seconds)
                        return {
                            "seconds_to_ready": ready,
                            "rss_mib_at_ready": at_ready,
                            "rss_mib_idle": rss_mib(replica.pid),
                        }
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"replica not ready within {timeout}s (exit code {replica.poll()})")
    finally:
        replica.terminate()
        replica.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--champions", type=int, default=200, help="identifiers for the growth per champion")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/flts-bench-model"))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "inference_start.json")
    args = parser.parse_args()
    env = {**os.environ, **stack_environment(StackConfig())}
    prefix = register_champion(env, args.model_dir)
    replica_env = {
        **env,
        "HTTP_PORT": str(args.port),
        "LOG_LEVEL": "ERROR",  # no champion has processed data here: its "no latest rows" warning is expected
        "AUTH_ENABLED": "false",  # as the local stack runs it
        "REGISTERED_MODEL_PREFIX": prefix,
        "CONSUMER_GROUP": f"{prefix}-inference",
    }
    runs = [start_replica(replica_env, args.port, 120, args.idle_seconds) for _ in range(args.runs)]
    result = {
        "runs": [{key: round(value, 2) for key, value in run.items()} for run in runs],
        "rss_mib_per_further_champion": round(growth_per_champion(args.model_dir, args.champions), 3),
        "targets": {"seconds_to_ready": 10, "rss_mib_idle": 500},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
