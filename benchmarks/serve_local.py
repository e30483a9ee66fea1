"""Serve a default-size GRU on /predict without the stack (no Kafka, S3 or MLflow): for benchmarks.

Trains the pipeline's default GRU (hidden 128, 2 layers) for one epoch on a small bundled dataset
(the forward pass costs the same as a fully trained one's), caches it under --model-dir, and runs
the inference service on it with the same uvicorn settings as `inference_container.service`.

    .venv/bin/python benchmarks/serve_local.py --port 8001 &
    .venv/bin/python benchmarks/bench_predict.py --inference http://127.0.0.1:8001 --seconds 20 --users 16
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn

from flts.config import InferenceSettings, PipelineConfig, load_pipeline_config
from flts.data.generate import generate_lte_dataset
from flts.data.preprocess import preprocess
from flts.data.windows import make_windows
from flts.layout import GRAPH_FILE, PREPROCESSING_FILE
from flts.models.base import WindowLayout
from flts.predict import ModelIdentity, ServingModel


def build(directory: Path, config: PipelineConfig) -> None:
    from flts.models.recurrent import train_recurrent

    train, test = generate_lte_dataset(train_rows=2_000, test_rows=400, seed=5)
    processed = preprocess(train, test, config)
    meta = processed.metadata
    windows = [
        make_windows(
            frame,
            meta.time_column,
            meta.feature_columns,
            meta.target_columns,
            config.windows.input_seq_len,
            config.windows.output_seq_len,
        )
        for frame in (processed.train, processed.validation)
    ]
    targets = meta.target_columns
    forecaster, _ = train_recurrent(
        "GRU",
        *windows,
        WindowLayout.build(meta.feature_columns, targets, config.windows.input_seq_len, config.windows.output_seq_len),
        config.models.recurrent.model_copy(update={"epochs": 1}),
    )
    forecaster.save(directory)
    (directory / PREPROCESSING_FILE).write_text(json.dumps(meta.to_json()))


def bench_model(directory: Path, config: PipelineConfig, threads: int) -> ServingModel:
    """The benchmarks' GRU, built into ``directory`` the first time, served on ``threads`` ONNX Runtime threads."""
    from flts.models.exported import configure_threads

    if not (directory / GRAPH_FILE).exists():  # a bundle from before graphs were exported is rebuilt
        directory.mkdir(parents=True, exist_ok=True)
        build(directory, config)
    configure_threads(threads)
    identity = ModelIdentity("bench", "GRU", "1", "bench", "0" * 64)
    return ServingModel.load(directory, identity, config.inference.max_inference_length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/flts-bench-model"))
    parser.add_argument("--model-thread", action="store_true", help="inference.model_thread on")
    parser.add_argument("--wait-ms", type=float, help="inference.micro_batch_wait_ms (default: the pipeline config's)")
    args = parser.parse_args()

    config = load_pipeline_config(InferenceSettings().pipeline_config)
    if args.model_thread:
        config = config.model_copy(update={"inference": config.inference.model_copy(update={"model_thread": True})})
    if args.wait_ms is not None:
        config = config.model_copy(
            update={"inference": config.inference.model_copy(update={"micro_batch_wait_ms": args.wait_ms})}
        )
    if not (args.model_dir / GRAPH_FILE).exists():  # a bundle from before graphs were exported is rebuilt
        args.model_dir.mkdir(parents=True, exist_ok=True)
        build(args.model_dir, config)

    from flts.models.exported import configure_threads
    from inference_container.champions import Champions
    from inference_container.service import create_app

    # With FLTS_API_KEY set, auth is on and that key is the admin's (Locust sends the same variable).
    api_key = os.environ.get("FLTS_API_KEY", "")
    settings = InferenceSettings(http_port=args.port, auth_enabled=bool(api_key), auth_admin_key=api_key)
    configure_threads(settings.model_threads)
    champions = Champions()
    identity = ModelIdentity("global", "GRU", "1", "bench-run", "0" * 64)
    champions.install(ServingModel.load(args.model_dir, identity, config.inference.max_inference_length))
    app = create_app(settings, champions, follow_registry=False, inference=config.inference)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
