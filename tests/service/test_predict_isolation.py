"""/predict as a specification: one caller's request neither stalls nor fails everyone else's.

A micro-batch's work (windows x steps) is bounded, a heavy batch is computed off the event loop (the probes and
the other requests are answered meanwhile), and a champion that raises fails only its own requests. Real small
models (tests/serving_models.py), wrapped where a test needs a forecaster that waits or raises.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from flts.client import window_request
from flts.config import InferenceConfig
from flts.models.base import WindowLayout
from flts.models.composite import ColumnComposite
from flts.predict import ServingModel
from flts.settings import InferenceSettings
from inference_container.champions import Champions
from inference_container.inference import Job
from inference_container.service import create_app


def _client(*models: ServingModel, **limits: Any) -> TestClient:
    champions = Champions()
    for model in models:
        champions.install(model)
    app = create_app(InferenceSettings(), champions, follow_registry=False, inference=InferenceConfig(**limits))
    return TestClient(app, raise_server_exceptions=False)


def _as(model: ServingModel, identifier: str, forecaster: Any) -> ServingModel:
    """`model` served as another identifier's champion with another forecaster."""
    identity = dataclasses.replace(model.identity, identifier=identifier)
    return dataclasses.replace(model, identity=identity, forecaster=forecaster)


def _outcomes(name: str) -> float:
    return REGISTRY.get_sample_value("flts_predictions_total", {"outcome": name}) or 0.0


def _record_batches(client: TestClient) -> list[list[Job]]:
    """Every micro-batch the running app computes, as its jobs, from now on."""
    batcher = client.app.state.inference.batcher  # type: ignore[attr-defined]
    batches: list[list[Job]] = []
    process = batcher.process

    def recorded(jobs: list[Job]) -> Any:
        batches.append(list(jobs))
        return process(jobs)

    batcher.process = recorded
    return batches


def _concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    answers: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


@pytest.fixture
def windows(raw_data) -> list[list[dict]]:
    """256 different windows of the test split (10 rows each)."""
    test = raw_data[1]
    return [window_request(test.iloc[i : i + 10], 10)["rows"] for i in range(256)]


# ------------------------------------------------------------------------------ off the event loop


class Gated:
    """The wrapped forecaster, whose first forward pass waits until `release` (set at most `hold` s after it began)."""

    def __init__(self, inner: Any, hold: float) -> None:
        self.inner, self.hold = inner, hold
        self.model_type, self.layout = inner.model_type, inner.layout
        self.started, self.release = threading.Event(), threading.Event()

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        if not self.started.is_set():
            self.started.set()
            threading.Timer(self.hold, self.release.set).start()
            self.release.wait()
        return self.inner.predict(inputs, target_times)


def test_healthz_answers_while_a_maximal_batch_is_computed(gru_model, windows):
    """The largest request the limits admit (256 windows x 60 recursive steps) is computed on the model thread:
    /healthz answers while it is in flight, far sooner than it takes. Its first pass holds for a second, so the
    probes meet it in flight whatever the machine's speed; on the event loop they would wait for all of it."""
    gated = Gated(gru_model.forecaster, hold=1.0)
    model = dataclasses.replace(gru_model, forecaster=gated)
    with _client(model, request_timeout_seconds=60) as client:
        big: dict[str, Any] = {}

        def ask_big() -> None:
            started = time.perf_counter()
            big["response"] = client.post("/predict", json={"windows": windows, "inference_length": 60})
            big["seconds"] = time.perf_counter() - started

        thread = threading.Thread(target=ask_big)
        thread.start()
        assert gated.started.wait(30), "the big batch never started"
        probes: list[float] = []
        while thread.is_alive():
            started = time.perf_counter()
            health = client.get("/healthz")
            probes.append(time.perf_counter() - started)
            assert health.status_code == 200
        thread.join()
    response = big["response"]
    assert response.status_code == 200, response.text
    assert len(response.json()["forecasts"]) == 256
    assert all(len(forecast) == 60 for forecast in response.json()["forecasts"])
    print(
        f"maximal batch {big['seconds']:.2f} s; /healthz meanwhile: {len(probes)} probes, "
        f"median {statistics.median(probes) * 1000:.1f} ms, max {max(probes) * 1000:.1f} ms"
    )
    assert len(probes) >= 3, probes
    # On the event loop the first probe would wait for nearly all of the batch (>= 1 s); off it, each answers
    # at once (on the 2-core machine at load averages 8-36: median 1-17 ms, the slowest 45-370 ms, while the
    # 5 MB answer is written; the batch 1.2-2.5 s).
    assert max(probes) < big["seconds"] / 4, (max(probes), big["seconds"])
    assert statistics.median(probes) < big["seconds"] / 20, (statistics.median(probes), big["seconds"])


# ------------------------------------------------------------------------------ the work per batch


def test_a_request_over_the_batch_work_cap_is_a_413_naming_its_work_and_never_queued(gru_model, windows):
    with _client(gru_model, max_batch_work=100) as client:
        batches = _record_batches(client)
        before = _outcomes("too_large")
        response = client.post("/predict", json={"windows": windows[:10], "inference_length": 11})
        at_the_cap = client.post("/predict", json={"windows": windows[:10], "inference_length": 10})
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "10 windows x 11 steps is 110 window-steps" in detail and "at most 100" in detail, detail
    assert _outcomes("too_large") == before + 1
    assert at_the_cap.status_code == 200, at_the_cap.text
    assert [len(batch) for batch in batches] == [1]  # only the request at the cap reached the model


def test_requests_that_together_exceed_the_cap_are_split_into_batches_and_all_answered(gru_model, windows):
    """Six requests of 50 window-steps with a cap of 100: at most two per batch, every one answered."""
    with _client(gru_model, max_batch_work=100, micro_batch_wait_ms=300, request_timeout_seconds=30) as client:
        batches = _record_batches(client)
        bodies = [{"windows": windows[i * 5 : i * 5 + 5], "inference_length": 10} for i in range(6)]
        answers = _concurrently([lambda body=body: client.post("/predict", json=body) for body in bodies])
    assert [answer.status_code for answer in answers] == [200] * 6, [answer.text for answer in answers]
    for answer in answers:
        forecasts = answer.json()["forecasts"]
        assert len(forecasts) == 5 and all(len(forecast) == 10 for forecast in forecasts)
    work = [sum(job.work for job in batch) for batch in batches]
    assert sum(work) == 300 and max(work) <= 100 and len(batches) >= 3, work


# ------------------------------------------------------------------------------ errors per champion


@dataclass(frozen=True)
class Broken:
    """A composite member whose forward pass raises."""

    layout: WindowLayout
    model_type: str = "THETA"

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        raise RuntimeError("member exploded")


def test_a_champion_that_raises_fails_only_its_own_requests_in_a_mixed_batch(gru_model, windows):
    """One micro-batch, two champions: tenant-b's composite has a member that raises. Its requests are 503s that
    say so (counted as model_failed); the global champion's requests in the same batch are answered."""
    column = gru_model.target_columns[0]
    base = gru_model.forecaster
    composite = ColumnComposite(base, {"THETA": Broken(base.layout)}, {column: "THETA"})
    broken = _as(gru_model, "tenant-b", composite)
    with _client(gru_model, broken, micro_batch_requests=6, micro_batch_wait_ms=1_000, request_timeout_seconds=30) as c:
        batches = _record_batches(c)
        before = _outcomes("model_failed")
        identifiers = ["global", "tenant-b"] * 3
        answers = _concurrently(
            [
                lambda i=i, who=who: c.post("/predict", json={"identifier": who, "rows": windows[i]})
                for i, who in enumerate(identifiers)
            ]
        )
        health = c.get("/healthz")
    assert [len(batch) for batch in batches] == [6]  # all six shared one micro-batch
    for who, answer in zip(identifiers, answers, strict=True):
        if who == "global":
            assert answer.status_code == 200, answer.text
            assert answer.json()["identifier"] == "global"
        else:
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            detail = answer.json()["detail"]
            assert "'tenant-b'" in detail and "failed while forecasting (RuntimeError)" in detail, detail
    assert _outcomes("model_failed") == before + 3
    assert health.status_code == 200


class PoisonedBy:
    """The wrapped forecaster, raising for a batch that holds a window with a feature beyond `limit` (scaled)."""

    def __init__(self, inner: Any, limit: float) -> None:
        self.inner, self.limit = inner, limit
        self.model_type, self.layout = inner.model_type, inner.layout

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        if np.abs(inputs).max() > self.limit:
            raise FloatingPointError("overflow in a hidden state")
        return self.inner.predict(inputs, target_times)


def test_a_window_the_model_raises_on_fails_only_its_own_request_not_the_others_sharing_its_pass(gru_model, windows):
    """Four requests to one champion share one forward pass; one window makes the model raise. That request is
    a 503; the other three are forecast again without it and answered."""
    model = dataclasses.replace(gru_model, forecaster=PoisonedBy(gru_model.forecaster, limit=1_000))
    poisoned = [dict(row) for row in windows[3]]
    poisoned[-1]["down"] = 1e9  # finite once scaled, but far beyond anything in training
    bodies = [{"rows": windows[0]}, {"rows": windows[1]}, {"rows": poisoned}, {"rows": windows[2]}]
    with _client(model, micro_batch_requests=4, micro_batch_wait_ms=1_000, request_timeout_seconds=30) as client:
        batches = _record_batches(client)
        answers = _concurrently([lambda body=body: client.post("/predict", json=body) for body in bodies])
    assert [len(batch) for batch in batches] == [4]
    assert [answer.status_code for answer in answers] == [200, 200, 503, 200], [a.text for a in answers]
    assert "failed while forecasting (FloatingPointError)" in answers[2].json()["detail"]
