"""Which champion each identifier serves, and how a replica keeps that in agreement with the registry.

The registry's `champion` aliases are the truth; `model-selected` events only make a replica hear of a
promotion sooner. So:
- a replica is ready only after one complete read of every alias (paged: any number of identifiers), with
  every champion loaded up to `max_loaded_champions`; the rest load on their first request (`Champions`);
- loads and event-driven swaps take one lock, so they never interleave;
- an event only makes the replica read the identifier's alias, which decides: a replica may hear an older
  event last, and an event naming a version the alias does not (forged, or another identifier's run) installs
  nothing of its own;
- every `champion_reconcile_seconds` (and after any failed load, sooner, with backoff) the aliases are
  read again and whatever differs is installed: a lost event, a failed download, an operator's rollback;
- the replica is unready while its `model-selected` follower is not running (it would miss promotions);
- each reconcile (and each event) also compares what the replica serves with the identifier's newest promotion in
  eval's history: `flts_champions_stale` counts the identifiers served an older version (a swap that did not
  happen, or an operator's rollback of the alias), without naming them.

Every replica follows `model-selected` in a consumer group of its own (`follower.py`), so each one hears of every
promotion.
A swap replaces one dict entry: requests in flight finish on the model they started with.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prometheus_client import Counter, Gauge

from flts.config import load_pipeline_config
from flts.layout import champion_pointer_uri, history_prefix, processed_uri, split_file
from flts.messages import ModelSelected
from flts.models.base import load_forecaster
from flts.models.composite import ColumnComposite
from flts.outages import is_outage
from flts.predict import ModelIdentity, ServingModel, Window, directory_bytes
from flts.records import Promotion, Selection
from flts.settings import InferenceSettings
from flts.storage import ObjectStore
from flts.tracking import REGISTRY_PAGE_SIZE, Tracker
from inference_container.follower import ChampionFollower

log = logging.getLogger(__name__)

CHAMPION_LOADS = Counter(
    "flts_champion_loads_total",
    "Champion loads by outcome: installed, on_demand (a dropped or not yet held champion asked for), unchanged "
    "(already served), stale (an event older than the alias), refused (an event naming what the registry's alias does "
    "not: forged, or another identifier's), failed.",
    ["outcome"],
)
HELD_CHAMPIONS = Gauge("flts_champions_held", "Champions held in memory by this replica.")
HELD_BYTES = Gauge(
    "flts_champions_held_bytes", "Size of the model bundles (composites with their members) this replica holds."
)
KNOWN_CHAMPIONS = Gauge("flts_champions_known", "Identifiers with a champion in the registry, held or not.")
CHAMPIONS_DROPPED = Counter(
    "flts_champions_dropped_total", "Least recently used champions dropped to stay within max_loaded_champions."
)
STALE_CHAMPIONS = Gauge(
    "flts_champions_stale",
    "Identifiers this replica serves an older version than their newest promotion in eval's history (a swap that "
    "did not happen, or an operator's rollback), at the last reconcile.",
)
# Eval's history is listed this many keys at a time (after the newest key already seen).
HISTORY_PAGE_SIZE = 1000
# A failed load is retried after this long, doubling up to the reconcile period.
RETRY_FIRST_SECONDS = 2.0


@dataclass(frozen=True)
class ChampionRef:
    """What the registry's alias names for an identifier: enough to load its champion when it is first asked for."""

    model_version: str
    run_id: str


class Champions:
    """The models being served, by identifier.

    Every champion the registry names is known; at most `capacity` are held in memory (0: all) besides the pinned
    ones. Beyond it the least recently used one is dropped, and a known champion that is not held is loaded when it
    is next asked for (`load_on_demand`, set by the loader), so memory stays bounded however many identifiers a
    replica serves. The live stream pins the identifiers of the partitions this replica owns (`pin`): dropping one
    of those would reload it on its next row, so the cache holds what the replica's partitions need, and the
    capacity bounds the rest. The latest rows of an identifier (small) are kept when its model is dropped.
    """

    def __init__(self, capacity: int = 0, max_bytes: int = 0) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.load_on_demand: Callable[[str], ServingModel | None] | None = None
        self._models: OrderedDict[str, ServingModel] = OrderedDict()  # least recently used first
        self._known: dict[str, ChampionRef] = {}
        self._latest: dict[str, Window] = {}
        self._selection: dict[str, Selection] = {}
        self._pinned: set[str] = set()
        self._guard = threading.Lock()

    def get(self, identifier: str) -> ServingModel | None:
        """The identifier's champion, loaded first when it is known but not held (blocks for the download)."""
        model = self.loaded(identifier)
        if model is None and identifier in self._known and self.load_on_demand is not None:
            model = self.load_on_demand(identifier)
        return model

    def peek(self, identifier: str) -> ServingModel | None:
        """The champion if it is held in memory, not counted as a use (listings, the loader's own checks)."""
        return self._models.get(identifier)

    def loaded(self, identifier: str) -> ServingModel | None:
        """The champion if it is held in memory (counts as a use), else None."""
        with self._guard:
            model = self._models.get(identifier)
            if model is not None:
                self._models.move_to_end(identifier)
            return model

    def known(self, identifier: str) -> ChampionRef | None:
        """The version the registry names for the identifier (held in memory or not)."""
        return self._known.get(identifier)

    def know(self, identifier: str, ref: ChampionRef) -> None:
        """The registry names `ref` for the identifier; a held model of another version is kept until replaced."""
        self._known[identifier] = ref
        KNOWN_CHAMPIONS.set(len(self._known))

    def has_room(self) -> bool:
        """Whether one more champion can be held without dropping another."""
        return not self.capacity or self._droppable() < self.capacity

    def pin(self, identifiers: set[str]) -> None:
        """Never drop these identifiers' champions (the series of the partitions this replica's stream owns)."""
        with self._guard:
            self._pinned |= identifiers

    def unpin(self, identifiers: set[str]) -> None:
        """These may be dropped again (their partitions went to another replica)."""
        with self._guard:
            self._pinned -= identifiers

    def _droppable(self) -> int:
        return sum(1 for identifier in self._models if identifier not in self._pinned)

    def _over_budget(self, keep: str) -> bool:
        """More champions held than `capacity`, or more bytes than `max_bytes` (a composite holds up to eight
        models), with one that may still be dropped (never the pinned ones, nor `keep`, the one just installed)."""
        if not any(i not in self._pinned and i != keep for i in self._models):
            return False
        too_many = bool(self.capacity) and self._droppable() > self.capacity
        too_big = bool(self.max_bytes) and self._held_bytes() > self.max_bytes
        return too_many or too_big

    def _held_bytes(self) -> int:
        return sum(model.bundle_bytes + model.member_bytes for model in self._models.values())

    def identifiers(self) -> list[str]:
        """Every identifier with a champion, held or not."""
        return sorted(self._known.keys() | self._models.keys())

    def latest(self, identifier: str) -> Window | None:
        """The most recent rows known for the identifier (what a body without rows forecasts from)."""
        return self._latest.get(identifier)

    def selection(self, identifier: str) -> Selection | None:
        """Why eval chose the champion served: its reason and the leaderboard, with what could not be served."""
        return self._selection.get(identifier)

    def explain(self, identifier: str, selection: Selection | None) -> None:
        """Eval's record of why the identifier's champion won (None: unknown)."""
        if selection is None:
            self._selection.pop(identifier, None)
        else:
            self._selection[identifier] = selection

    def install(self, model: ServingModel, latest: Window | None = None, selection: Selection | None = None) -> None:
        """Serve `model`; `latest`: the identifier's most recent rows from the lineage's data (the newer of these
        and the rows kept from before is kept, when it fits the model); `selection`: eval's record of why this
        model won (None: unknown). Holding it may drop the least recently used champion."""
        identifier = model.identity.identifier
        self.explain(identifier, selection)
        shape = (model.rows_needed, len(model.measured_columns))
        fitting = [w for w in (latest, self._latest.get(identifier)) if w is not None and w.values.shape == shape]
        if fitting:
            self._latest[identifier] = max(fitting, key=lambda window: int(window.nanoseconds[-1]))
        else:
            self._latest.pop(identifier, None)
        self.know(identifier, ChampionRef(model.identity.model_version, model.identity.run_id))
        with self._guard:
            self._models[identifier] = model
            self._models.move_to_end(identifier)
            dropped = []
            while self._over_budget(keep=identifier):
                oldest = next(i for i in self._models if i not in self._pinned and i != identifier)
                del self._models[oldest]
                dropped.append(oldest)
            HELD_CHAMPIONS.set(len(self._models))
            HELD_BYTES.set(self._held_bytes())
        for old in dropped:
            self._selection.pop(old, None)
            CHAMPIONS_DROPPED.inc()
            log.info("dropped the least recently used champion", extra={"identifier": old, "held": self.capacity})
        log.info("serving champion", extra=model.identity.__dict__)

    def remember(self, identifier: str, latest: Window | None) -> None:
        """A newer window of the identifier (a measurement landed): what a body without rows forecasts from next."""
        if latest is None:
            self._latest.pop(identifier, None)
        else:
            self._latest[identifier] = latest

    def all(self) -> list[ServingModel]:
        """The champions held in memory."""
        with self._guard:
            return list(self._models.values())


class ChampionLoader:
    """Loads champions from the MLflow registry and follows `model-selected`; says whether the replica is ready."""

    def __init__(self, settings: InferenceSettings, champions: Champions) -> None:
        self.settings = settings
        self.champions = champions
        self.tracker = Tracker(settings)
        inference = load_pipeline_config(settings.pipeline_config).inference
        self.max_inference_length = inference.max_inference_length
        self.reconcile_seconds = inference.champion_reconcile_seconds
        self.serve_column_winners = inference.serve_column_winners
        self.cache = Path(settings.model_cache_dir)
        self.page_size = REGISTRY_PAGE_SIZE
        self._store: ObjectStore | None = None
        self._lock = threading.RLock()
        self._reconcile_now = threading.Event()
        self.loaded = threading.Event()  # set by the first complete read of every alias
        champions.load_on_demand = self.load_on_demand
        self.follower: ChampionFollower | None = None
        self._newest: dict[str, tuple[str, str]] = {}  # identifier -> its newest history key and the version it names
        self._stale: set[str] = set()

    def unready_reason(self) -> str | None:
        """Why the replica must not take traffic (None: ready)."""
        failure = self.liveness_failure()
        if failure is not None:
            return f"{failure}: promotions would be missed"
        if not self.loaded.is_set():
            return "champions not loaded from the registry yet"
        return None

    def liveness_failure(self) -> str | None:
        """Why the replica must be restarted (None: alive)."""
        return None if self.follower_alive() else "the model-selected follower is not running"

    def follower_alive(self) -> bool:
        """False once the follower ended by itself (its supervisor restarts it only when it fails): only a restart of
        the process brings it back."""
        return self.follower is None or self.follower.is_alive()

    def reconcile(self) -> None:
        """Read every alias and install what differs from what is served, then count the replica loaded.

        An identifier whose load failed is retried by the next reconcile; a failure that is an outage
        (MLflow or S3 unreachable) leaves the load incomplete and raises, a broken model does not.
        """
        outages: list[str] = []
        for identifier in self.tracker.registered_identifiers(self.page_size):
            try:
                self.load_alias(identifier)
            except Exception as exc:
                CHAMPION_LOADS.labels("failed").inc()
                log.exception("loading a champion failed; retried next reconcile", extra={"identifier": identifier})
                if is_outage(exc):
                    outages.append(identifier)
            self.check_stale(identifier)
        if outages:
            raise RuntimeError(f"champions not loaded for {outages}: the registry is unreachable")
        self.loaded.set()

    def load_alias(self, identifier: str) -> ChampionRef | None:
        """Know the version the identifier's alias names, whatever the order of events, and install it when its
        champion is held or there is room (else it loads on its first request); returns what the alias names."""
        with self._lock:
            version = self.tracker.champion(identifier)
            if version is None:
                return None
            ref = ChampionRef(str(version.version), version.run_id)
            self._know_and_install(identifier, ref)
            return ref

    def load_on_demand(self, identifier: str) -> ServingModel | None:
        """Load a known champion that is not held (dropped, or beyond the capacity at start-up); None when it is
        unknown or its load failed (retried by the next reconcile and the next request)."""
        with self._lock:
            model = self.champions.loaded(identifier)
            ref = self.champions.known(identifier)
            if model is not None or ref is None:
                return model
            try:
                self._install(identifier, ref.model_version, ref.run_id, outcome="on_demand")
            except Exception:
                CHAMPION_LOADS.labels("failed").inc()
                log.exception("loading a champion on demand failed", extra={"identifier": identifier})
                self._reconcile_now.set()
                return None
            return self.champions.loaded(identifier)

    def _know_and_install(self, identifier: str, ref: ChampionRef) -> None:
        self.champions.know(identifier, ref)
        if self.champions.peek(identifier) is not None or self.champions.has_room():
            self._install(identifier, ref.model_version, ref.run_id)

    def on_model_selected(self, event: ModelSelected) -> None:
        """An event is a hint, never an order: the identifier's alias in the registry is read and what it names is
        installed, so an event naming a version the registry does not hold, or another identifier's run, installs
        nothing of its own (counted `refused`). A failure is left to the reconciler: a replica's private group never
        dead-letters."""
        try:
            with self._lock:
                named = self.load_alias(event.identifier)
                self.check_stale(event.identifier)
                if named != ChampionRef(event.model_version, event.run_id):
                    older = named is not None and not _newer(event.model_version, named.model_version)
                    CHAMPION_LOADS.labels("stale" if older else "refused").inc()
                    log.warning(
                        "a model-selected event the registry's alias does not confirm; the alias is served",
                        extra={"event": event.model_dump(mode="json"), "alias": named and dataclasses.asdict(named)},
                    )
        except Exception:
            CHAMPION_LOADS.labels("failed").inc()
            log.exception("loading a selected champion failed; reconciling", extra={"identifier": event.identifier})
            self._reconcile_now.set()

    def check_stale(self, identifier: str) -> None:
        """Count the identifier in `flts_champions_stale` while the version served (the one held, else the one the
        alias names) is older than the newest promotion in eval's history; a failed read changes nothing."""
        try:
            newest = self.newest_promotion(identifier)
        except Exception:
            log.warning("eval's history not read", extra={"identifier": identifier}, exc_info=True)
            return
        held = self.champions.peek(identifier)
        known = self.champions.known(identifier)
        served = held.identity.model_version if held is not None else known.model_version if known else None
        if newest is not None and served is not None and _newer(newest, served):
            self._stale.add(identifier)
        else:
            self._stale.discard(identifier)
        STALE_CHAMPIONS.set(len(self._stale))

    def newest_promotion(self, identifier: str) -> str | None:
        """The model version of the identifier's newest promotion in eval's history (its keys sort in time order);
        only the keys after the newest one already seen are listed."""
        bucket, prefix = self.settings.bucket_promotion, history_prefix(identifier)
        seen_key, version = self._newest.get(identifier, ("", None))
        newest_key, after = seen_key, seen_key or prefix
        while True:
            objects, after = self.store.page(bucket, prefix, HISTORY_PAGE_SIZE, after)
            newest_key = objects[-1]["Key"] if objects else newest_key
            if after is None:
                break
        if newest_key != seen_key:
            uri = f"s3://{bucket}/{newest_key}"
            version = Promotion.parse(self.store.get_json(uri), uri).model_version
            self._newest[identifier] = (newest_key, version)
        return version

    def _install(self, identifier: str, model_version: str, run_id: str, outcome: str = "installed") -> None:
        current = self.champions.peek(identifier)  # a reconcile is not a use: it must not reorder the LRU
        if current is not None and current.identity.model_version == model_version:
            # Eval writes its record just after the event, and an interim champion's record changes when the same
            # model is confirmed as the final one (more models ranked: the columns' winners may differ).
            known = self.champions.selection(identifier)
            if known is None or known.interim:
                selection = self.selection(current.identity)
                if selection is not None and selection != known:
                    promoted = current
                    if isinstance(current.forecaster, ColumnComposite):
                        promoted = dataclasses.replace(current, forecaster=current.forecaster.base, member_bytes=0)
                    self.champions.install(self.with_column_winners(promoted, selection), selection=selection)
            CHAMPION_LOADS.labels("unchanged").inc()
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
        selection = self.selection(identity)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            directory = Path(self.tracker.download_model(run_id, tmp))
            model = ServingModel.load(directory, identity, self.max_inference_length)
        model = self.with_column_winners(model, selection)
        self.champions.install(model, self.latest_rows(model), selection)
        CHAMPION_LOADS.labels(outcome).inc()

    def with_column_winners(self, model: ServingModel, selection: Selection | None) -> ServingModel:
        """The champion with each target column forecast by the servable model that won it on validation (the
        leaderboard's `column_wins`; flts.models.composite). Members are runs of the champion's lineage (the
        selection names its run), so they read the same windows."""
        if not self.serve_column_winners or not selection:
            return model
        champion_type = model.identity.model_type
        won = {entry.model_type: entry for entry in selection.leaderboard if entry.column_wins and entry.servable}
        if not set(won) - {champion_type}:
            return model
        members, member_bytes = {}, 0
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            for model_type, entry in won.items():
                if model_type != champion_type:
                    directory = self.tracker.download_model(entry.run_id, tempfile.mkdtemp(dir=tmp))
                    members[model_type] = load_forecaster(Path(directory))
                    member_bytes += directory_bytes(Path(directory))
        winners = {column: model_type for model_type, entry in won.items() for column in entry.column_wins}
        composite = ColumnComposite(model.forecaster, members, winners)
        log.info("serving columns by their validation winners", extra={"column_models": composite.column_models})
        return dataclasses.replace(model, forecaster=composite, member_bytes=member_bytes)

    @property
    def store(self) -> ObjectStore:
        self._store = self._store or ObjectStore(self.settings)
        return self._store

    def latest_rows(self, model: ServingModel) -> Window | None:
        """The end of the lineage's data: the last rows of its processed test split (the latest split)."""
        identity = model.identity
        uri = processed_uri(self.settings, identity.identifier, identity.config_hash, split_file("test"))
        try:
            return model.window_from_processed(pd.read_parquet(io.BytesIO(self.store.get_bytes(uri))))
        except Exception:
            log.warning(
                "no latest rows for %s: a body without rows will be refused", identity.identifier, exc_info=True
            )
            return None

    def selection(self, identity: ModelIdentity) -> Selection | None:
        """Eval's reason and leaderboard from the lineage's champion pointer, when it names this run (an operator
        who moved the alias to another run leaves nothing to explain it)."""
        uri = champion_pointer_uri(self.settings, identity.identifier, identity.config_hash)
        try:
            record = Promotion.parse(self.store.get_json(uri), uri) if self.store.exists(uri) else None
        except Exception:
            log.warning("no selection record for %s", identity.identifier, exc_info=True)
            return None
        if record is None or record.run_id != identity.run_id:
            return None
        return Selection.of(record)

    def start(self, stop: threading.Event) -> None:
        """The follower of `model-selected` (supervised: started again when it stalls or fails) and the reconciler,
        each on a thread of its own."""
        self.follower = ChampionFollower(self.settings, self.on_model_selected, stop).start()
        threading.Thread(target=self.keep_reconciled, args=(stop,), name="champion-reconciler", daemon=True).start()

    def keep_reconciled(self, stop: threading.Event) -> None:
        """Reconcile once subscribed (or after 30 s without Kafka), then every period, and at once on each
        reassignment of the follower (it starts at the end of the topic: a promotion before it is found here).
        A failed reconcile is retried with backoff, from 2 s up to the period."""
        self._wait_for_cause(stop, 30)
        retry = RETRY_FIRST_SECONDS
        while not stop.is_set():
            try:
                self.reconcile()
                wait, retry = self.reconcile_seconds, RETRY_FIRST_SECONDS
            except Exception:
                log.exception("reconciling champions with the registry failed; retrying", extra={"in_s": retry})
                stop.wait(retry)
                wait, retry = 0.0, min(retry * 2, self.reconcile_seconds)
            self._wait_for_cause(stop, wait)

    def _wait_for_cause(self, stop: threading.Event, timeout: float) -> None:
        """Until `timeout` passes, the follower is (re)assigned its partition, or a failed load asks for a reconcile."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            if self.follower is not None and self.follower.reassigned():
                return
            if self._reconcile_now.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                self._reconcile_now.clear()
                return


def _newer(candidate: str, served: str) -> bool:
    """Registry versions are integers that only grow; a non-number (never seen) counts as not newer."""
    return candidate.isdigit() and served.isdigit() and int(candidate) > int(served)
