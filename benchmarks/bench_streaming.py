"""Live forecasts end to end on a real broker: measurements/s through to forecasts, and the lag they take.

A publisher process sends measurements at --rate rows/s, spread over --identifiers series, for
--seconds; the inference replica's stream forecaster (`stream_forecasts`, in this process, serving the
pipeline's default GRU from `serve_local.py` as every identifier's champion) turns each row into a
forecast event; a reader process consumes the forecasts and records each one's lag (received by the
reader minus the measurement's `created_at`). Fresh topics per run; the broker is the one in
KAFKA_BOOTSTRAP_SERVERS (e.g. the local stack's, `flts stack env`).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 .venv/bin/python benchmarks/bench_streaming.py --rate 2000 --identifiers 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from flts.config import load_pipeline_config
from flts.kafka import ensure_topics
from flts.messages import Forecast, Measurement
from flts.predict import ServingModel
from flts.settings import InferenceSettings
from inference_container.champions import Champions
from inference_container.streaming import stream_forecasts

ROOT = Path(__file__).resolve().parents[1]


def publish(
    bootstrap: str,
    topic: str,
    identifiers: list[str],
    columns: list[str],
    first_ns: int,
    step_ns: int,
    rate: int,
    seconds: float,
) -> None:
    """Send rate x seconds measurements, paced every 10 ms, round-robin over the identifiers."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": "all"})
    rng = np.random.default_rng(1)
    total, sent, started = int(rate * seconds), 0, time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        for index in range(sent, due):
            identifier = identifiers[index % len(identifiers)]
            at = first_ns + step_ns * (index // len(identifiers) + 1)
            row = Measurement(
                identifier=identifier,
                ts=datetime.fromtimestamp(at / 1e9, UTC),
                values=dict(zip(columns, rng.random(len(columns)).tolist(), strict=True)),
            )
            while True:
                try:
                    producer.produce(topic, row.to_bytes(), key=identifier)
                    break
                except BufferError:
                    producer.poll(0.01)
        sent = due
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(30)


def read(bootstrap: str, topic: str, expected: int, timeout: float, results: multiprocessing.Queue) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    lags, first, last = [], None, None
    deadline = time.monotonic() + timeout
    while len(lags) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.01):  # the reader's own wait must not add to the lag it measures
            if msg.error():
                continue
            now = datetime.now(UTC)
            event = Forecast.from_bytes(msg.value())
            lags.append((now - event.measured_at).total_seconds())
            first = first or event.measured_at
            last = now
    consumer.close()
    span = (last - first).total_seconds() if lags else 0.0
    results.put({"forecasts": len(lags), "span_s": span, "lags": lags})


def run(args: argparse.Namespace, model: ServingModel) -> dict:
    load_before = os.getloadavg()
    suffix = uuid.uuid4().hex[:8]
    settings = InferenceSettings(
        topic_measurements=f"bench-measurements-{suffix}",
        topic_forecasts=f"bench-forecasts-{suffix}",
        topic_dead_letter=f"bench-dlq-{suffix}",
        consumer_group=f"bench-{suffix}",
        log_level="WARNING",
    )
    ensure_topics(settings, partitions=3)
    identifiers = [f"cell-{i:03d}" for i in range(args.identifiers)]
    champions = Champions()
    seed = model.window_on_grid(
        model.anchor_ns + model.step_ns * np.arange(model.rows_needed, dtype=np.int64),
        np.random.default_rng(0).random((model.rows_needed, len(model.measured_columns))),
    )
    for identifier in identifiers:
        champions.install(
            dataclasses.replace(model, identity=dataclasses.replace(model.identity, identifier=identifier)), seed
        )
    stop = threading.Event()
    forecaster = threading.Thread(target=stream_forecasts, args=(settings, champions, stop), daemon=True)
    forecaster.start()
    expected = int(args.rate * args.seconds)
    results: multiprocessing.Queue = multiprocessing.Queue()
    reader = multiprocessing.Process(
        target=read,
        args=(settings.kafka_bootstrap_servers, settings.topic_forecasts, expected, args.seconds + 60, results),
    )
    reader.start()
    time.sleep(3)  # the forecaster and the reader join their groups
    publisher = multiprocessing.Process(
        target=publish,
        args=(
            settings.kafka_bootstrap_servers,
            settings.topic_measurements,
            identifiers,
            model.measured_columns,
            int(seed.last_ns),
            model.step_ns,
            args.rate,
            args.seconds,
        ),
    )
    publisher.start()
    publisher.join(args.seconds + 60)
    outcome = results.get(timeout=args.seconds + 90)
    reader.join(10)
    stop.set()
    forecaster.join(10)
    lags = np.array(outcome["lags"]) if outcome["lags"] else np.array([np.nan])
    return {
        "identifiers": args.identifiers,
        "load_average_before": load_before,
        "offered_rows_per_s": args.rate,
        "seconds": args.seconds,
        "rows_sent": expected,
        "forecasts_received": outcome["forecasts"],
        "forecasts_per_s": round(outcome["forecasts"] / outcome["span_s"]) if outcome["span_s"] else 0,
        "lag_p50_s": round(float(np.percentile(lags, 50)), 3),
        "lag_p99_s": round(float(np.percentile(lags, 99)), 3),
        "lag_max_s": round(float(np.max(lags)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="measurements offered per second")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--identifiers", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads (the inference default, MODEL_THREADS, is 1)"
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/flts-bench-model"))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "streaming.json")
    args = parser.parse_args()

    from serve_local import bench_model

    config = load_pipeline_config(InferenceSettings().pipeline_config)
    model = bench_model(args.model_dir, config, args.threads)
    result = run(args, model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
