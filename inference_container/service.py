"""Inference: serves each identifier's champion on POST /predict and hot-swaps on `model-selected`.

The routes are in `api.py`; what they work with (the champions and the micro-batcher) in `inference.py`; how
champions arrive from the registry and stay in agreement with it (a complete load before /readyz, event-driven
swaps, periodic reconciliation) in `champions.py`. Beside them, threads score batch claims from `inference-data`
(`scoring.py`) and forecast each live row from `measurements` (`streaming.py`) with the same champions; each of
these Kafka workers, the champion follower too, is kept running by a `flts.consumers.Supervisor`. Each
replica also keeps, per identifier, the most recent rows it knows (seeded from the end of the lineage's processed
data), so a body without rows forecasts from there.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI

from flts import auth
from flts.auth import GLOBAL
from flts.config import InferenceConfig, load_pipeline_config
from flts.models.exported import configure_threads
from flts.observability import configure_logging
from flts.predict import ServingModel, Window
from flts.settings import InferenceSettings
from flts.web import BodySizeLimit, service_app
from inference_container.api import predict_body, router
from inference_container.champions import ChampionLoader, Champions
from inference_container.deps import PREDICTIONS
from inference_container.inference import Inference
from inference_container.oip import OipErrors
from inference_container.oip import router as open_inference_protocol
from inference_container.scoring import score_claims
from inference_container.streaming import stream_forecasts

# Where the public example window of /predict ends (within one step after it): a date of no series.
EXAMPLE_WINDOW_END_NS = pd.Timestamp("2000-01-01T00:00:00Z").value


def create_app(
    settings: InferenceSettings,
    champions: Champions | None = None,
    follow_registry: bool = True,
    inference: InferenceConfig | None = None,
) -> FastAPI:
    """`champions`, `follow_registry=False` and `inference` (the limits) let tests and benchmarks serve given models."""
    limits = inference or load_pipeline_config(settings.pipeline_config).inference
    champions = champions or Champions(limits.max_loaded_champions, limits.max_loaded_champion_bytes)
    loader = ChampionLoader(settings, champions) if follow_registry else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.inference = service = Inference(champions, limits, loader)
        stop = threading.Event()
        if loader is not None:
            loader.start(stop)
            threading.Thread(
                target=score_claims, args=(settings, champions.get, stop), name="batch-scorer", daemon=True
            ).start()
            threading.Thread(
                target=stream_forecasts,
                args=(settings, champions, stop, loader.loaded),
                name="stream-forecaster",
                daemon=True,
            ).start()
        yield
        stop.set()
        await service.close()

    app = service_app(
        "FLTS inference",
        "Forecasts from each identifier's champion model.",
        lifespan,
        router,
        liveness_failure=loader.liveness_failure if loader is not None else None,
    )
    app.include_router(open_inference_protocol)  # /v2: KServe-style clients (inference_container/oip.py)
    app.state.loader = loader
    publish_served_constraints(app, champions, limits)
    app.add_middleware(
        BodySizeLimit, max_bytes=limits.max_request_bytes, on_refused=PREDICTIONS.labels("too_large").inc
    )
    auth.install(app, settings)  # outermost: an anonymous body is refused before it is counted
    app.add_middleware(OipErrors)  # /v2's errors as {"error": ...}, those of the two above included
    return app


def publish_served_constraints(app: FastAPI, champions: Champions, limits: InferenceConfig) -> None:
    """/openapi.json describes the /predict body the global champion served now really takes (built per request:
    the champions change while the app runs). The document is public: it names the model's columns (what a body
    must hold) but not when the global series was last measured (`example_window`)."""
    static_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = copy.deepcopy(static_openapi())
        content = document["paths"]["/predict"]["post"]["requestBody"]["content"]
        model = champions.get(GLOBAL)
        content["application/json"] = predict_body(model, example_window(model, champions.latest(GLOBAL)), limits)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def example_window(model: ServingModel | None, latest: Window | None) -> Window | None:
    """The shape of the latest window for the public example: its times moved back on the model's grid (same step
    and phase) to end by EXAMPLE_WINDOW_END, its values zeros, so it tells nothing of the series' data."""
    if model is None or latest is None:
        return None
    shift = (latest.last_ns - EXAMPLE_WINDOW_END_NS) // model.step_ns * model.step_ns
    return dataclasses.replace(latest, nanoseconds=latest.nanoseconds - shift, values=np.zeros_like(latest.values))


def main() -> None:
    settings = InferenceSettings()
    configure_logging(settings.service_name, settings.log_level)
    configure_threads(settings.model_threads)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
