"""The inference service through FastAPI's TestClient, on real (small) trained models."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flts.client import window_request
from flts.settings import InferenceSettings
from inference_container.champions import Champions
from inference_container.service import create_app

STEP = pd.Timedelta(minutes=2)


@pytest.fixture
def champions(gru_model) -> Champions:
    champions = Champions()
    champions.install(gru_model)
    return champions


@pytest.fixture
def client(champions) -> Iterator[TestClient]:
    app = create_app(InferenceSettings(), champions, follow_registry=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def window(raw_data) -> dict:
    return window_request(raw_data[1].head(40), 10)


def test_probes_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "models": 1}
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_no_model_yet_is_503_with_retry_after():
    with TestClient(create_app(InferenceSettings(), Champions(), follow_registry=False)) as empty:
        ready = empty.get("/readyz")
        predict = empty.post("/predict", json={"rows": []})
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
    assert predict.status_code == 503 and predict.headers["Retry-After"] == "5"


def test_predict_one_window_on_the_original_scale(client, window, raw_data, gru_model):
    response = client.post("/predict", json=window, headers={"X-Request-ID": "req-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Request-ID"] == "req-1"
    assert (body["model_type"], body["model_version"], body["run_id"]) == ("GRU", "1", "run-gru")
    (prediction,) = body["predictions"]
    last = pd.Timestamp(window["rows"][-1]["time"], tz="UTC")
    assert pd.Timestamp(prediction["ts"]) == last + STEP
    targets = gru_model.target_columns
    assert set(prediction) == {"ts", *targets}
    train = raw_data[0]
    for column in targets:
        low, high = train[column].min(), train[column].max()
        span = high - low
        assert low - span <= prediction[column] <= high + span, column


def test_a_batch_is_scored_in_one_call_and_matches_single_windows(client, raw_data):
    test = raw_data[1]
    windows = [window_request(test.iloc[i : i + 10], 10)["rows"] for i in (0, 50, 100)]
    batch = client.post("/predict", json={"windows": windows}).json()
    assert len(batch["forecasts"]) == 3
    for rows, forecast in zip(windows, batch["forecasts"], strict=True):
        single = client.post("/predict", json={"rows": rows}).json()["predictions"]
        assert forecast[0]["ts"] == single[0]["ts"]
        for key in single[0]:
            if key != "ts":
                assert math.isclose(forecast[0][key], single[0][key], rel_tol=1e-5, abs_tol=1e-6)


def test_the_earlier_systems_shape_and_recursive_forecasts(client, window):
    rows = window["rows"]
    data = {column: [row[column] for row in rows] for column in rows[0]}
    body = client.post("/predict", json={"data": data, "index_col": "time", "inference_length": 5}).json()
    assert body["identifier"] == "global" and body["run_id"] == "run-gru"
    times = [pd.Timestamp(p["ts"]) for p in body["predictions"]]
    last = pd.Timestamp(rows[-1]["time"], tz="UTC")
    assert times == [last + STEP * (i + 1) for i in range(5)]


def _rows_with(window: dict, change) -> dict:
    rows = [dict(row) for row in window["rows"]]
    change(rows)
    return {"rows": rows}


@pytest.mark.parametrize(
    "make_body, fragment",
    [
        (lambda w: _rows_with(w, lambda rows: [r.pop("down") for r in rows]), "missing columns ['down']"),
        (lambda w: {"rows": w["rows"][:4]}, "4 rows sent; the model needs the last 10 rows"),
        (lambda w: _rows_with(w, lambda rows: rows[3].update(up="lots")), "up"),
        (lambda w: _rows_with(w, lambda rows: rows[3].update(time="yesterday")), "row 4: time"),
        (lambda w: _rows_with(w, lambda rows: rows.reverse()), "increasing time order"),
        (lambda w: _rows_with(w, lambda rows: rows[5].update(time=rows[4]["time"])), "time"),
        (lambda w: {**w, "inference_length": 10_000}, "exceeds the limit of 60"),
        (lambda w: {**w, "data": {"time": []}}, "exactly one of rows, windows or data"),
        (lambda w: {"windows": []}, "windows is empty"),
        (lambda w: {"windows": [w["rows"]] * 300}, "at most 256"),
        (lambda w: {**w, "colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_a_422_that_names_the_problem(client, window, make_body, fragment):
    response = client.post("/predict", json=make_body(window))
    assert response.status_code == 422, response.text
    assert fragment in json.dumps(response.json())


@pytest.mark.parametrize("body", [b"\x80", b"{not json", b"\xff\xfe{}"])
def test_a_body_that_is_not_json_is_a_422_that_does_not_echo_it(client, body):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "json" in response.text.lower()
    assert "input" not in response.json()["detail"][0]


def test_infinite_values_are_rejected(client, window):
    rows = [dict(row) for row in window["rows"]]
    rows[2]["down"] = float("inf")
    response = client.post("/predict", content=json.dumps({"rows": rows}), headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "down" in response.text


def test_an_unknown_identifier_is_404_naming_only_that_identifier(client, window):
    response = client.post("/predict", json={**window, "identifier": "cell-9"})
    assert response.status_code == 404
    assert "cell-9" in response.text and "global" not in response.text


def test_fuzzed_bodies_never_cause_a_5xx(client, window):
    rng = random.Random(11)
    values = [None, "", "x", 0, -1, 1e308, -1e308, True, [], {}, "2024-01-01T00:00:00Z", 3.5]
    row = window["rows"][0]
    for _ in range(300):
        rows = [dict(r) for r in window["rows"][: rng.randint(0, 12)]]
        for r in rows:
            for _ in range(rng.randint(0, 3)):
                r[rng.choice([*row, "extra"])] = rng.choice(values)
        body = rng.choice(
            [
                {"rows": rows},
                {"windows": [rows, rows]},
                {"data": {k: [r.get(k) for r in rows] for k in row}, "inference_length": rng.randint(-2, 70)},
                {"rows": rng.choice(values)},
                rng.choice(values),
            ]
        )
        response = client.post("/predict", json=body)
        assert response.status_code < 500, (body, response.text)


def test_a_new_champion_is_swapped_in_without_dropping_requests(client, champions, window, persistence_model):
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = client.post("/predict", json=window)
            outcomes.append((response.status_code, response.json().get("model_version")))

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for worker in workers:
        worker.start()
    while len(outcomes) < 30:
        pass
    champions.install(persistence_model)
    count = len(outcomes)
    while len(outcomes) < count + 30:
        pass
    stop.set()
    for worker in workers:
        worker.join()
    assert {status for status, _ in outcomes} == {200}
    assert outcomes[-1][1] == "2"
    assert {version for _, version in outcomes} == {"1", "2"}
    info = client.get("/model-info").json()
    assert info["model_type"] == "PERSISTENCE" and info["rows_needed"] == 10


def test_persistence_forecasts_the_last_value(persistence_model, window):
    forecasts = persistence_model.forecast([persistence_model.window_from_rows(window["rows"])], 1)
    (forecast,) = persistence_model.records(forecasts, 0)
    last = window["rows"][-1]
    for column in persistence_model.target_columns:
        assert np.isclose(forecast[column], last[column], rtol=1e-4, atol=1e-3)


def test_metrics_are_exposed(client, window):
    client.post("/predict", json=window)
    assert "flts_predictions_total" in client.get("/metrics/").text
