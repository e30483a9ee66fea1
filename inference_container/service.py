"""Inference: serves each identifier's champion on POST /predict and hot-swaps on `model-selected`.

Every replica joins a consumer group of its own, so each one hears of every new champion; a
replica started later (HPA scale-out) loads the current champions from the registry at start-up.
A swap replaces one dict entry: requests in flight finish on the model they started with.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Gauge, Histogram, make_asgi_app
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flts.config import InferenceSettings, load_pipeline_config
from flts.kafka import ConsumerLoop, ConsumerStalled
from flts.messages import ModelSelected
from flts.observability import configure_logging, log_context
from flts.predict import ModelIdentity, RequestError, ServingModel
from flts.tracking import TAG_CONFIG_HASH, TAG_MODEL_TYPE, Tracker

log = logging.getLogger(__name__)

PREDICTIONS = Counter("flts_predictions_total", "Forecast requests by outcome.", ["outcome"])
PREDICT_SECONDS = Histogram(
    "flts_predict_seconds",
    "Time to answer /predict.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
CHAMPION_VERSION = Gauge("flts_champion_version", "Model version being served, by identifier.", ["identifier"])

Cell = float | int | str | None


class PredictRequest(BaseModel):
    """One window (`rows`), a batch of windows (`windows`), or the earlier system's `data` shape."""

    model_config = ConfigDict(extra="forbid")

    identifier: str | None = Field(None, description="Which series' champion to use; the global one when absent.")
    rows: list[dict[str, Cell]] | None = Field(None, description="One window: the most recent rows, oldest first.")
    windows: list[list[dict[str, Cell]]] | None = Field(None, description="A batch of windows, scored in one pass.")
    data: dict[str, list[Cell]] | None = Field(None, description="Earlier clients: {column: [values...]}.")
    index_col: str | None = Field(None, description="With `data`: the time column's name.")
    inference_length: int | None = Field(None, ge=1, description="Steps to forecast; beyond output_seq_len, recursive.")

    @model_validator(mode="after")
    def _exactly_one_shape(self) -> PredictRequest:
        given = [name for name in ("rows", "windows", "data") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"send exactly one of rows, windows or data (got {given or 'none'})")
        if self.windows is not None and not self.windows:
            raise ValueError("windows is empty")
        return self

    def frames(self, time_column: str, max_windows: int) -> list[pd.DataFrame]:
        if self.windows is not None:
            if len(self.windows) > max_windows:
                raise RequestError(f"{len(self.windows)} windows sent; at most {max_windows} per request")
            return [pd.DataFrame(window) for window in self.windows]
        if self.rows is not None:
            return [pd.DataFrame(self.rows)]
        assert self.data is not None
        lengths = {len(values) for values in self.data.values()}
        if len(lengths) > 1:
            raise RequestError(f"every column in data must have the same length (got lengths {sorted(lengths)})")
        frame = pd.DataFrame(self.data)
        if self.index_col and self.index_col != time_column:
            frame = frame.rename(columns={self.index_col: time_column})
        return [frame]


class Champions:
    """The models being served, by identifier."""

    def __init__(self) -> None:
        self._models: dict[str, ServingModel] = {}

    def get(self, identifier: str) -> ServingModel | None:
        return self._models.get(identifier)

    def install(self, model: ServingModel) -> None:
        self._models[model.identity.identifier] = model
        CHAMPION_VERSION.labels(model.identity.identifier).set(float(model.identity.model_version))
        log.info("serving champion", extra=model.identity.__dict__)

    def all(self) -> list[ServingModel]:
        return list(self._models.values())


class ChampionLoader:
    """Fetches champions from the MLflow registry: all of them at start-up, one on `model-selected`."""

    def __init__(self, settings: InferenceSettings, champions: Champions) -> None:
        self.settings = settings
        self.champions = champions
        self.tracker = Tracker(settings)
        self.max_inference_length = load_pipeline_config(settings.pipeline_config).inference.max_inference_length
        self.cache = Path(settings.model_cache_dir)

    def load_all(self) -> None:
        prefix = f"{self.settings.registered_model_prefix}-"
        for registered in self.tracker.client.search_registered_models(f"name LIKE '{prefix}%'"):
            identifier = registered.name.removeprefix(prefix)
            version = self.tracker.champion(identifier)
            if version is not None:
                self.load(identifier, str(version.version), version.run_id)

    def load(self, identifier: str, model_version: str, run_id: str) -> None:
        current = self.champions.get(identifier)
        if current is not None and current.identity.model_version == model_version:
            return
        run = self.tracker.client.get_run(run_id)
        identity = ModelIdentity(
            identifier=identifier,
            model_type=run.data.tags.get(TAG_MODEL_TYPE, "?"),
            model_version=model_version,
            run_id=run_id,
            config_hash=run.data.tags.get(TAG_CONFIG_HASH, ""),
        )
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            directory = Path(self.tracker.download_model(run_id, tmp))
            self.champions.install(ServingModel.load(directory, identity, self.max_inference_length))

    def on_model_selected(self, event: ModelSelected) -> None:
        self.load(event.identifier, event.model_version, event.run_id)

    def follow(self, stop: threading.Event) -> None:
        """Subscribe first, then load from the registry, so no promotion falls between the two.

        A stalled follower (the loop's watchdog) is replaced by a fresh one, which loads again.
        """
        while not stop.is_set():
            group = f"{self.settings.consumer_group}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
            loop = ConsumerLoop(
                self.settings,
                self.settings.topic_model_selected,
                ModelSelected,
                self.on_model_selected,
                group_id=group,
                consumer_overrides={"auto.offset.reset": "latest"},
            )
            ended = threading.Event()
            threading.Thread(target=lambda current=loop: (stop.wait(), current.stop()), daemon=True).start()
            threading.Thread(target=self._load_when_subscribed, args=(loop, stop, ended), daemon=True).start()
            try:
                loop.run()
                return
            except ConsumerStalled:
                log.error("the champion follower stalled; starting a new one")
            finally:
                ended.set()

    def _load_when_subscribed(self, loop: ConsumerLoop, stop: threading.Event, ended: threading.Event) -> None:
        """Load every champion once subscribed (or after 30 s without Kafka), and again on each reassignment.

        The follower starts at the end of its topic (auto.offset.reset=latest), and so does one that lost
        its membership (a broker restart) and rejoined: a promotion in between reaches it only this way.
        """
        loop.assigned.wait(timeout=30)
        while not (stop.is_set() or ended.is_set()):
            loop.assigned.clear()
            while not stop.is_set():
                try:
                    self.load_all()
                    break
                except Exception:
                    log.exception("loading champions from the registry failed; retrying")
                    stop.wait(2)
            while not (stop.is_set() or ended.is_set() or loop.assigned.wait(timeout=1)):
                pass


def create_app(
    settings: InferenceSettings, champions: Champions | None = None, follow_registry: bool = True
) -> FastAPI:
    champions = champions or Champions()
    max_windows = load_pipeline_config(settings.pipeline_config).inference.max_batch_windows

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        stop = threading.Event()
        if follow_registry:
            loader = ChampionLoader(settings, champions)
            threading.Thread(target=loader.follow, args=(stop,), name="champion-follower", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(
        title="FLTS inference",
        version="0.1.0",
        description="Forecasts from each identifier's champion model.",
        lifespan=lifespan,
    )
    app.state.champions = champions
    app.mount("/metrics", make_asgi_app())

    def champion_for(identifier: str | None) -> ServingModel:
        model = champions.get(identifier or "global")
        if model is not None:
            return model
        if not champions.all():
            raise HTTPException(503, "no model loaded yet", headers={"Retry-After": "5"})
        known = sorted(m.identity.identifier for m in champions.all())
        raise HTTPException(404, f"no champion for identifier {identifier or 'global'!r}; serving {known}")

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    def readyz(response: Response) -> dict[str, Any]:
        loaded = [m.identity.identifier for m in champions.all()]
        if not loaded:
            response.status_code = 503
            response.headers["Retry-After"] = "5"
            return {"status": "no model loaded"}
        return {"status": "ready", "identifiers": loaded}

    @app.get("/model-info", tags=["models"])
    def model_info(identifier: Annotated[str | None, Query()] = None) -> dict[str, Any]:
        return champion_for(identifier).describe()

    @app.get("/models", tags=["models"])
    def models() -> list[dict[str, Any]]:
        return [m.describe() for m in champions.all()]

    @app.post("/predict", tags=["predict"])
    def predict(body: PredictRequest, x_request_id: Annotated[str | None, Header()] = None) -> JSONResponse:
        started = time.perf_counter()
        request_id = x_request_id or uuid.uuid4().hex
        model = champion_for(body.identifier)
        with log_context(request_id=request_id, identifier=model.identity.identifier):
            try:
                forecasts = model.forecast(body.frames(model.time_column, max_windows), body.inference_length)
            except RequestError as exc:
                PREDICTIONS.labels("rejected").inc()
                log.info("predict rejected", extra={"reason": str(exc)})
                raise HTTPException(422, str(exc)) from exc
        PREDICTIONS.labels("ok").inc()
        PREDICT_SECONDS.observe(time.perf_counter() - started)
        content = {**model.identity.__dict__, "predictions": forecasts[0]}
        if body.windows is not None:
            content["forecasts"] = forecasts
        return JSONResponse(content, headers={"X-Request-ID": request_id})

    return app


def main() -> None:
    settings = InferenceSettings()
    configure_logging(settings.service_name, settings.log_level)
    import torch

    torch.set_num_threads(settings.torch_num_threads)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
