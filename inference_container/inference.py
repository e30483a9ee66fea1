"""The inference service object: the champions, the micro-batcher they share, and what /predict does with them.

Concurrent requests share one forward pass through the micro-batcher (bounded queue: 429 when full,
504 when a request waits too long; a batch's work, windows x steps, bounded: a request over it alone is a 413).
A heavy batch runs on the model thread so the event loop keeps answering, and one champion failing fails only
its own requests (503): the batch's other champions answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from prometheus_client import Gauge, Histogram

from flts.auth import GLOBAL, Principal, require_identifier
from flts.batching import MicroBatcher
from flts.config import InferenceConfig
from flts.predict import Forecasts, RequestError, ServingModel, Window, iso_times
from inference_container.champions import ChampionLoader, Champions

log = logging.getLogger(__name__)

BATCH_REQUESTS = Histogram(
    "flts_predict_batch_requests",
    "Requests sharing one forward pass (micro-batch size).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_DEPTH = Gauge("flts_predict_queue_depth", "Requests waiting for the model.")


@dataclass(frozen=True)
class Job:
    """One request's work for the micro-batcher."""

    model: ServingModel
    windows: list[Window]
    length: int

    @property
    def work(self) -> int:
        """What the job costs a forward pass: window-steps (a recursive step is one more pass per window)."""
        return len(self.windows) * self.length


class ModelFailed(Exception):
    """The champion raised while forecasting (not the request's fault): a 503 for its requests alone."""


Outcome = tuple[Forecasts, int] | RequestError | ModelFailed


def run_jobs(jobs: list[Job]) -> list[Outcome]:
    """The micro-batch: one forecast call per (model, length) for all its requests' windows. A group whose call
    raises is forecast again request by request, so only the requests the model fails on get its error."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, job in enumerate(jobs):
        groups.setdefault((id(job.model), job.length), []).append(index)
    results: list[Outcome] = [RequestError("not run")] * len(jobs)
    for indices in groups.values():
        try:
            outcomes = _run_group([jobs[i] for i in indices])
        except Exception as exc:
            outcomes = [_alone(jobs[i]) for i in indices] if len(indices) > 1 else [_failure(jobs[indices[0]], exc)]
        for index, outcome in zip(indices, outcomes, strict=True):
            results[index] = outcome
    return results


def _run_group(jobs: list[Job]) -> list[Outcome]:
    """One forecast call for the jobs' windows (one model, one length): each job's forecasts or its window's error."""
    forecasts = jobs[0].model.forecast([w for job in jobs for w in job.windows], jobs[0].length)
    outcomes: list[Outcome] = []
    start = 0
    for job in jobs:
        count = len(job.windows)
        errors = [(n, e) for n, e in enumerate(forecasts.errors[start : start + count]) if e is not None]
        if errors:
            position, error = errors[0]
            outcomes.append(RequestError(f"window {position}: {error}" if count > 1 else error))
        else:
            outcomes.append((forecasts, start))
        start += count
    return outcomes


def _alone(job: Job) -> Outcome:
    try:
        return _run_group([job])[0]
    except Exception as exc:
        return _failure(job, exc)


def _failure(job: Job, exc: Exception) -> RequestError | ModelFailed:
    """A RequestError the model raised is the request's (a 422); anything else the champion's (a 503, logged)."""
    if isinstance(exc, RequestError):
        return exc
    identity = job.model.identity
    log.error("forecast failed", exc_info=exc, extra=identity.__dict__)
    return ModelFailed(
        f"the champion of {identity.identifier!r} ({identity.model_type}, version {identity.model_version}) "
        f"failed while forecasting ({type(exc).__name__}); retry later, or tell the operators if it persists"
    )


class Inference:
    """What the routes need, built once in the app's lifespan: the champions, the limits and the micro-batcher."""

    def __init__(self, champions: Champions, limits: InferenceConfig, loader: ChampionLoader | None = None) -> None:
        """`loader`: what keeps the champions in agreement with the registry (None: tests' given models)."""
        self.champions = champions
        self.limits = limits
        self.loader = loader
        self.batcher: MicroBatcher[Job, tuple[Forecasts, int]] = MicroBatcher(
            run_jobs,
            max_batch=limits.micro_batch_requests,
            max_wait=limits.micro_batch_wait_ms / 1000,
            max_queue=limits.queue_max_requests,
            timeout=limits.request_timeout_seconds,
            name="predict-batcher",
            weigh=lambda job: job.work,
            max_weight=limits.max_batch_work,
            inline_max_weight=0 if limits.model_thread else limits.loop_max_work,
        )
        self.batcher.on_batch = BATCH_REQUESTS.observe
        QUEUE_DEPTH.set_function(lambda: self.batcher.depth)

    def unready_reason(self) -> str | None:
        """Why the replica must not take traffic (None: ready): the loader's reason, or nothing to serve."""
        reason = self.loader.unready_reason() if self.loader is not None else None
        return reason or (None if self.champions.all() else "no model loaded")

    async def close(self) -> None:
        await self.batcher.close()

    def champion_for(self, principal: Principal, identifier: str | None) -> ServingModel:
        """The identifier's champion, once the caller may use it (so a 404 tells nothing of other tenants); one that
        is known but not held is loaded first (blocking: for sync routes and threads)."""
        identifier = self._allowed(principal, identifier)
        return self._found(identifier, self.champions.get(identifier))

    async def champion(self, principal: Principal, identifier: str | None) -> ServingModel:
        """`champion_for` for the event loop: a champion that must be loaded first is loaded on a worker thread,
        so the requests for held champions go on meanwhile."""
        identifier = self._allowed(principal, identifier)
        model = self.champions.loaded(identifier)
        if model is None and self.champions.known(identifier) is not None:
            model = await asyncio.to_thread(self.champions.get, identifier)
        return self._found(identifier, model)

    @staticmethod
    def _allowed(principal: Principal, identifier: str | None) -> str:
        identifier = identifier or GLOBAL
        require_identifier(principal, identifier)
        return identifier

    def _found(self, identifier: str, model: ServingModel | None) -> ServingModel:
        if model is not None:
            return model
        if self.champions.known(identifier) is not None:
            raise HTTPException(503, f"the champion of {identifier!r} could not be loaded yet", {"Retry-After": "5"})
        if not self.champions.all():
            raise HTTPException(503, "no model loaded yet", headers={"Retry-After": "5"})
        raise HTTPException(404, f"no champion for identifier {identifier!r} (yet)")

    def listing(self, principal: Principal) -> list[dict[str, Any]]:
        """Every champion the caller may use (an admin: all): held ones described in full, the others by the
        version the registry names (`loaded: false`; they load on their first request)."""
        entries = []
        for identifier in self.champions.identifiers():
            if not principal.may_use(identifier):
                continue
            model = self.champions.peek(identifier)
            ref = self.champions.known(identifier)
            if model is not None:
                entries.append({**self.describe(model), "loaded": True})
            elif ref is not None:
                entries.append({"identifier": identifier, **dataclasses.asdict(ref), "loaded": False})
        return entries

    def describe(self, model: ServingModel) -> dict[str, Any]:
        identifier = model.identity.identifier
        latest, selection = self.champions.latest(identifier), self.champions.selection(identifier)
        return {
            **model.describe(),
            "latest_row_ts": None if latest is None else iso_times(latest.nanoseconds[-1:])[0],
            "selection": None if selection is None else selection.to_json(),
        }

    def windows_of(
        self,
        model: ServingModel,
        rows: list[dict[str, Any]] | None,
        windows: list[list[dict[str, Any]]] | None,
        data: dict[str, list[Any]] | None,
        index_col: str | None,
    ) -> list[Window]:
        """The request's windows: sent as a batch, one window, columns, or none (the latest known rows)."""
        if windows is not None:
            if len(windows) > self.limits.max_batch_windows:
                raise RequestError(f"{len(windows)} windows sent; at most {self.limits.max_batch_windows} per request")
            return [model.window_from_rows(window, position) for position, window in enumerate(windows)]
        if rows is not None:
            return [model.window_from_rows(rows)]
        if data is not None:
            return [model.window_from_columns(data, index_col)]
        latest = self.champions.latest(model.identity.identifier)
        if latest is None:
            raise RequestError(
                f"no recent rows are known for {model.identity.identifier!r}: send them as rows, windows or data"
            )
        return [latest]
