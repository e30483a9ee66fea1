"""Peak memory of one batch-scoring claim at the upload caps: what `BatchScorer.handle` adds to a replica's RSS.

A `POST /score` file at every cap at once (`limits.max_rows` rows, `limits.max_columns` columns: the time column
and 63 measured ones, one-digit cells, so it stays under MAX_UPLOAD_BYTES) is scored by a persistence champion
(its forward pass is a copy: what is measured is the scorer's own memory, not a network's) through
`BatchScorer.handle`, with the object store and Kafka stood in for: the rows are read from a file when the scorer
asks for them, the result is hashed and dropped as it is uploaded. Each run is a process of its own; the figure is
its peak RSS (VmHWM, reset just before the claim is handled) minus its RSS just before.

    .venv/bin/python benchmarks/bench_scoring_memory.py                  # the scorer as it is
    .venv/bin/python benchmarks/bench_scoring_memory.py --scorer OLD.py  # another version of scoring.py
    .venv/bin/python benchmarks/bench_scoring_memory.py --rows 100000 --horizon 12
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flts.config import PipelineConfig, load_pipeline_config
from flts.data.preprocess import preprocess
from flts.layout import PREPROCESSING_FILE
from flts.messages import InferenceData, ObjectRef
from flts.models.base import WindowLayout
from flts.models.baselines import PersistenceForecaster
from flts.predict import ModelIdentity, ServingModel
from flts.settings import GatewaySettings, InferenceSettings
from flts.storage import ObjectStore, StoredObject

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def rows_file(path: Path, rows: int, measured: int) -> None:
    """A claim's CSV: a 2-minute grid and ``measured`` columns of one-digit values, written a block at a time."""
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(measured)]
    start = pd.Timestamp("2024-01-01")
    with path.open("w") as out:
        out.write(",".join(["time", *names]) + "\n")
        for first in range(0, rows, 100_000):
            count = min(100_000, rows - first)
            block = pd.DataFrame(rng.integers(0, 10, (count, measured)), columns=names)
            block.insert(0, "time", pd.date_range(start + pd.Timedelta(minutes=2 * first), periods=count, freq="2min"))
            block.to_csv(out, header=False, index=False, date_format="%Y-%m-%dT%H:%M:%S")


def champion(directory: Path, measured: int, config: PipelineConfig, horizon: int) -> ServingModel:
    """Persistence on the claim's columns forecasting ``horizon`` steps, its preprocessing fitted on a small frame
    of the same shape."""
    windows = config.windows.model_copy(update={"output_seq_len": horizon})
    config = config.model_copy(update={"windows": windows})
    rng = np.random.default_rng(1)
    train = pd.DataFrame(
        rng.integers(0, 10, (2_000, measured)).astype(float), columns=[f"c{i}" for i in range(measured)]
    )
    train.insert(0, "time", pd.date_range("2023-12-01", periods=2_000, freq="2min"))
    processed = preprocess(train, None, config)
    meta = processed.metadata
    layout = WindowLayout.build(
        meta.feature_columns, meta.target_columns, config.windows.input_seq_len, config.windows.output_seq_len
    )
    directory.mkdir(parents=True, exist_ok=True)
    PersistenceForecaster(layout).save(directory)
    (directory / PREPROCESSING_FILE).write_text(json.dumps(meta.to_json()))
    identity = ModelIdentity("bench", "PERSISTENCE", "1", "bench", "0" * 64)
    return ServingModel.load(directory, identity, config.inference.max_inference_length)


class StandInStore:
    """The ObjectStore calls the scorer makes: the rows from a file, the result hashed and dropped."""

    writer = ObjectStore.writer  # the real streaming writer, over put_stream below

    def __init__(self, rows: Path) -> None:
        self.rows = rows
        self.result_bytes = 0

    def exists(self, uri: str) -> bool:
        return False

    def get_bytes(self, uri: str) -> bytes:
        return self.rows.read_bytes()

    def put_bytes(self, uri: str, data: bytes, content_type: str = "") -> StoredObject:
        self.result_bytes = len(data)
        return StoredObject(uri, hashlib.sha256(data).hexdigest(), len(data))

    def put_stream(self, uri: str, stream: Any, max_bytes: int | None = None) -> StoredObject:
        digest = hashlib.sha256()
        while chunk := stream.read(8 * MIB):
            digest.update(chunk)
            self.result_bytes += len(chunk)
        return StoredObject(uri, digest.hexdigest(), self.result_bytes)


class Dropped:
    def publish(self, topic: str, message: Any) -> None:
        self.message = message


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One claim in this process: its peak RSS over the RSS before it."""
    spec = importlib.util.spec_from_file_location("scoring_under_test", args.scorer)
    scoring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scoring)
    settings = InferenceSettings()
    config = load_pipeline_config(settings.pipeline_config)
    model = champion(args.work / f"model-{args.measured}-{args.horizon}", args.measured, config, args.horizon)
    store = StandInStore(args.rows_file)
    scorer = scoring.BatchScorer(settings, lambda _identifier: model, store=store, producer=Dropped())
    size = args.rows_file.stat().st_size
    digest = hashlib.sha256(args.rows_file.read_bytes()).hexdigest()
    data = ObjectRef(uri="s3://datasets/bench/scoring/c1.csv", sha256=digest, size_bytes=size, rows=args.rows)
    claim = InferenceData(identifier="bench", claim_id="c1", dataset_id="c1", rows="raw", data=data)
    before = memory_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
    started = time.perf_counter()
    scorer.handle(claim)
    seconds = time.perf_counter() - started
    return {
        "scorer": str(args.scorer),
        "rows": args.rows,
        "columns": args.measured + 1,
        "horizon": args.horizon,
        "file_mib": round(size / MIB, 1),
        "result_mib": round(store.result_bytes / MIB, 1),
        "rss_before_mib": round(before / 1024),
        "peak_rss_mib": round(memory_kib("VmHWM") / 1024),
        "added_mib": round((memory_kib("VmHWM") - before) / 1024),
        "seconds": round(seconds, 1),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    limits = load_pipeline_config(InferenceSettings().pipeline_config).limits
    parser.add_argument("--rows", type=int, default=limits.max_rows)
    parser.add_argument("--measured", type=int, default=limits.max_columns - 1, help="measured columns (+ time)")
    parser.add_argument("--horizon", type=int, default=1, help="steps each window forecasts (output_seq_len)")
    parser.add_argument("--scorer", type=Path, default=ROOT / "inference_container" / "scoring.py")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flts-bench-scoring-memory")
    parser.add_argument("--rows-file", type=Path, help=argparse.SUPPRESS)  # set for the measuring process
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "scoring_memory.json")
    args = parser.parse_args()
    if args.rows_file is not None:
        print(json.dumps(measure(args)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows = args.work / f"rows-{args.rows}x{args.measured}.csv"
    if not rows.exists():
        rows_file(rows, args.rows, args.measured)
    size = rows.stat().st_size
    assert size <= GatewaySettings().max_upload_bytes, f"{size} bytes: over MAX_UPLOAD_BYTES"
    command = [sys.executable, __file__, *sys.argv[1:], "--rows-file", str(rows), "--work", str(args.work)]
    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
