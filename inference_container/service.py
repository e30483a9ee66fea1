"""Inference: serves each identifier's champion on POST /predict and hot-swaps on `model-selected`.

The routes are in `api.py`; what they work with (the champions and the micro-batcher) in `inference.py`; how
champions arrive from the registry and stay in agreement with it (a complete load before /readyz, event-driven
swaps, periodic reconciliation) in `champions.py`. Beside them, threads score batch claims from `inference-data`
(`scoring.py`) and forecast each live row from `measurements` (`streaming.py`) with the same champions. Each
replica also keeps, per identifier, the most recent rows it knows (seeded from the end of the lineage's processed
data), so a body without rows forecasts from there.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from flts import auth
from flts.auth import GLOBAL
from flts.config import InferenceConfig, InferenceSettings, load_pipeline_config
from flts.models.exported import configure_threads
from flts.observability import configure_logging
from flts.web import BodySizeLimit, service_app
from inference_container.api import PREDICTIONS, predict_body, router
from inference_container.champions import ChampionLoader, Champions
from inference_container.inference import Inference
from inference_container.oip import OipErrors
from inference_container.oip import router as open_inference_protocol
from inference_container.scoring import score_claims
from inference_container.streaming import stream_forecasts


def create_app(
    settings: InferenceSettings,
    champions: Champions | None = None,
    follow_registry: bool = True,
    inference: InferenceConfig | None = None,
) -> FastAPI:
    """`champions`, `follow_registry=False` and `inference` (the limits) let tests and benchmarks serve given models."""
    limits = inference or load_pipeline_config(settings.pipeline_config).inference
    champions = champions or Champions(limits.max_loaded_champions)
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
    the champions change while the app runs)."""
    static_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = copy.deepcopy(static_openapi())
        content = document["paths"]["/predict"]["post"]["requestBody"]["content"]
        content["application/json"] = predict_body(champions.get(GLOBAL), champions.latest(GLOBAL), limits)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


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
