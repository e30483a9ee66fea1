"""Batch scoring throughput: windows/s of one claim through the scorer's path, without Kafka or S3.

The claim's rows (a processed split of --windows + rows_needed - 1 steps) are unscaled, windowed
(strided views), forecast by the pipeline's default GRU (hidden 128, 2 layers, the model
`serve_local.py` builds) one forward pass per chunk, turned into the result table (actuals and
errors) and written as parquet in memory: everything `BatchScorer.handle` does but the I/O.

    .venv/bin/python benchmarks/bench_scoring.py --windows 100000 --threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flts.config import load_pipeline_config
from flts.predict import Series, ServingModel, processed_series
from flts.settings import InferenceSettings
from inference_container.scoring import result_table

ROOT = Path(__file__).resolve().parents[1]


def long_series(model: ServingModel, steps: int) -> Series:
    """A series of `steps` consecutive grid steps: a processed split's values repeated, on a continuing grid."""
    metadata = model.metadata
    frame = pd.DataFrame(
        np.random.default_rng(0).random((steps, len(model.transform.measured))), columns=model.transform.measured
    )
    frame.insert(0, metadata.time_column, pd.date_range(metadata.grid_anchor, periods=steps, freq=metadata.frequency))
    frame["is_gap"] = 0.0
    return processed_series(frame, metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=100_000)
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads (the inference default, MODEL_THREADS, is 1)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/flts-bench-model"))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "scoring.json")
    args = parser.parse_args()

    from serve_local import bench_model

    config = load_pipeline_config(InferenceSettings().pipeline_config)
    model = bench_model(args.model_dir, config, args.threads)
    series = long_series(model, args.windows + model.rows_needed - 1)
    runs = []
    for _ in range(args.repeats):
        started, cpu = time.perf_counter(), time.process_time()
        forecasts = model.forecast_series(series)
        forecast_done = time.perf_counter()
        buffer = io.BytesIO()
        result_table(model, series, forecasts).to_parquet(buffer, index=False)
        finished = time.perf_counter()
        runs.append(
            {
                "windows": len(forecasts.values),
                "forecast_s": round(forecast_done - started, 3),
                "table_and_parquet_s": round(finished - forecast_done, 3),
                "windows_per_s": round(len(forecasts.values) / (finished - started)),
                "windows_per_cpu_s": round(len(forecasts.values) / (time.process_time() - cpu)),
            }
        )
    result = {"threads": args.threads, "load_average": os.getloadavg(), "runs": runs, "target_windows_per_s": 10_000}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
