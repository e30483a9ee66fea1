"""The champions a replica serves, by identifier, and how they reach it from the MLflow registry.

Every replica joins a consumer group of its own, so each one hears of every new champion; a
replica started later (HPA scale-out) loads the current champions from the registry at start-up.
A swap replaces one dict entry: requests in flight finish on the model they started with.
"""

from __future__ import annotations

import io
import logging
import socket
import tempfile
import threading
import uuid
from pathlib import Path

import pandas as pd
from prometheus_client import Gauge

from flts.config import InferenceSettings, load_pipeline_config
from flts.kafka import ConsumerLoop, ConsumerStalled
from flts.layout import processed_uri, split_file
from flts.messages import ModelSelected
from flts.predict import ModelIdentity, ServingModel, Window
from flts.storage import ObjectStore
from flts.tracking import Tracker

log = logging.getLogger(__name__)

CHAMPION_VERSION = Gauge("flts_champion_version", "Model version being served, by identifier.", ["identifier"])


class Champions:
    """The models being served, by identifier."""

    def __init__(self) -> None:
        self._models: dict[str, ServingModel] = {}
        self._latest: dict[str, Window] = {}

    def get(self, identifier: str) -> ServingModel | None:
        return self._models.get(identifier)

    def latest(self, identifier: str) -> Window | None:
        """The most recent rows known for the identifier (what a body without rows forecasts from)."""
        return self._latest.get(identifier)

    def install(self, model: ServingModel, latest: Window | None = None) -> None:
        """Serve `model`; `latest`: the identifier's most recent rows (kept from before when not given and they fit)."""
        identifier = model.identity.identifier
        known = latest or self._latest.get(identifier)
        if known is not None and known.values.shape == (model.rows_needed, len(model.measured_columns)):
            self._latest[identifier] = known
        else:
            self._latest.pop(identifier, None)
        self._models[identifier] = model
        CHAMPION_VERSION.labels(identifier).set(float(model.identity.model_version))
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
        self._store: ObjectStore | None = None

    def load_all(self) -> None:
        for identifier in self.tracker.registered_identifiers():
            version = self.tracker.champion(identifier)
            if version is not None:
                self.load(identifier, str(version.version), version.run_id)

    def load(self, identifier: str, model_version: str, run_id: str) -> None:
        current = self.champions.get(identifier)
        if current is not None and current.identity.model_version == model_version:
            return
        run = self.tracker.run_summary(run_id)
        identity = ModelIdentity(
            identifier=identifier,
            model_type=run.model_type,
            model_version=model_version,
            run_id=run_id,
            config_hash=run.config_hash,
        )
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            directory = Path(self.tracker.download_model(run_id, tmp))
            model = ServingModel.load(directory, identity, self.max_inference_length)
        self.champions.install(model, self.latest_rows(model))

    def latest_rows(self, model: ServingModel) -> Window | None:
        """The end of the lineage's data: the last rows of its processed test split (the latest split)."""
        identity = model.identity
        uri = processed_uri(self.settings, identity.identifier, identity.config_hash, split_file("test"))
        try:
            self._store = self._store or ObjectStore(self.settings)
            return model.window_from_processed(pd.read_parquet(io.BytesIO(self._store.get_bytes(uri))))
        except Exception:
            log.warning(
                "no latest rows for %s: a body without rows will be refused", identity.identifier, exc_info=True
            )
            return None

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
