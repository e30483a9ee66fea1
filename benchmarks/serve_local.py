"""Serve a default-size GRU (or another model type) on /predict without the stack (no Kafka, S3 or MLflow).

Trains the pipeline's default GRU (hidden 128, 2 layers) for one epoch on a small bundled dataset
(the forward pass costs the same as a fully trained one's), or with `--model-type` LightGBM or a statistical
model with the pipeline's settings, caches it under --model-dir, and runs the inference service on it with the
same uvicorn settings as `inference_container.service`.

    .venv/bin/python benchmarks/serve_local.py --port 8001 &
    .venv/bin/python benchmarks/bench_predict.py --inference http://127.0.0.1:8001 --seconds 20 --users 16
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import uvicorn

from flts.config import STATISTICAL_MODEL_TYPES, PipelineConfig, load_pipeline_config
from flts.data.generate import generate_lte_dataset
from flts.data.preprocess import preprocess
from flts.data.windows import make_windows
from flts.layout import GRAPH_FILE, MODEL_FILE, PREPROCESSING_FILE
from flts.models.base import WindowLayout
from flts.predict import ModelIdentity, ServingModel
from flts.settings import InferenceSettings


def build(directory: Path, config: PipelineConfig, model_type: str = "GRU") -> None:
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
    layout = WindowLayout.build(
        meta.feature_columns, targets, config.windows.input_seq_len, config.windows.output_seq_len
    )
    if model_type == "LIGHTGBM":
        from flts.models.boosted import fit_boosted

        forecaster = fit_boosted(*windows, layout, config.models.boosted)
    elif model_type in STATISTICAL_MODEL_TYPES:
        from flts.models.statistical import fit_statistical

        forecaster = fit_statistical(model_type, processed.train, targets, config.models.statistical, layout)
    else:
        from flts.models.recurrent import train_recurrent

        recurrent = config.models.recurrent.model_copy(update={"epochs": 1})
        forecaster, _ = train_recurrent(model_type, *windows, layout, recurrent)
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
    parser.add_argument("--model-type", default="GRU", choices=["GRU", "LIGHTGBM", *STATISTICAL_MODEL_TYPES])
    parser.add_argument("--model-dir", type=Path, help="default: /tmp/flts-bench-model (GRU), else one per type")
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
    suffix = "" if args.model_type == "GRU" else f"-{args.model_type.lower()}"
    model_dir = args.model_dir or Path(f"/tmp/flts-bench-model{suffix}")
    # A GRU bundle from before graphs were exported is rebuilt.
    if not (model_dir / (GRAPH_FILE if args.model_type == "GRU" else MODEL_FILE)).exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        build(model_dir, config, args.model_type)

    from flts.models.exported import configure_threads
    from inference_container.champions import Champions
    from inference_container.service import create_app

    # With FLTS_API_KEY set, auth is on and that key is the admin's (Locust sends the same variable).
    api_key = os.environ.get("FLTS_API_KEY", "")
    settings = InferenceSettings(http_port=args.port, auth_enabled=bool(api_key), auth_admin_key=api_key)
    configure_threads(settings.model_threads)
    champions = Champions()
    identity = ModelIdentity("global", args.model_type, "1", "bench-run", "0" * 64)
    champions.install(ServingModel.load(model_dir, identity, config.inference.max_inference_length))
    app = create_app(settings, champions, follow_registry=False, inference=config.inference)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
