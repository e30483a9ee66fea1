"""/predict as a specification: micro-batching and back-pressure, gaps filled as in training, forecasts
from the latest known rows, and a 422 (never a 5xx) for values the model cannot take. Real small models."""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flts.client import window_request
from flts.config import InferenceConfig, PipelineConfig
from flts.data.metadata import MetadataError
from flts.data.preprocess import preprocess
from flts.layout import PREPROCESSING_FILE
from flts.predict import ServingModel
from flts.settings import InferenceSettings
from inference_container.champions import Champions
from inference_container.service import create_app

CONFIG = PipelineConfig()


def _client(model, latest=None, **limits) -> TestClient:
    champions = Champions()
    champions.install(model, latest)
    app = create_app(InferenceSettings(), champions, follow_registry=False, inference=InferenceConfig(**limits))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(gru_model) -> Iterator[TestClient]:
    with _client(gru_model) as client:
        yield client


@pytest.fixture
def rows(raw_data) -> list[dict]:
    return window_request(raw_data[1].iloc[100:112], 12)["rows"]


def _close(left: dict, right: dict, rel: float = 1e-5) -> bool:
    return all(math.isclose(left[k], right[k], rel_tol=rel, abs_tol=1e-6) for k in left if k != "ts")


# ------------------------------------------------------------------------------ batching and back-pressure


def test_concurrent_requests_are_answered_as_if_alone(gru_model, raw_data):
    """Concurrent requests share forward passes; each still gets its own window's forecast."""
    test = raw_data[1]
    bodies = [window_request(test.iloc[i : i + 10], 10) for i in range(0, 160, 10)]
    with _client(gru_model, micro_batch_wait_ms=20) as client:
        alone = [client.post("/predict", json=body).json()["predictions"][0] for body in bodies]
        together: list[dict | None] = [None] * len(bodies)

        def ask(index: int) -> None:
            together[index] = client.post("/predict", json=bodies[index]).json()["predictions"][0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = client.get("/metrics/").text
    for single, batched in zip(alone, together, strict=True):
        assert batched is not None and batched["ts"] == single["ts"] and _close(single, batched)
    assert "flts_predict_batch_requests_count" in metrics


def test_a_full_queue_is_a_429_with_retry_after_and_counted(gru_model, rows):
    """One request may wait (queue_max_requests=1) while the batch gathers for 500 ms: the others are refused."""
    with _client(gru_model, queue_max_requests=1, micro_batch_wait_ms=500, micro_batch_requests=8) as client:
        answers: list = []
        threads = [
            threading.Thread(target=lambda: answers.append(client.post("/predict", json={"rows": rows})))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = client.get("/metrics/").text
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses[0] == 200 and 429 in statuses, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.headers["Retry-After"] == "1" and "busy" in refused.json()["detail"]
    assert 'flts_predictions_total{outcome="overloaded"}' in metrics


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_max_request_bytes_is_a_413_and_counted(gru_model, rows, chunked):
    """Declared or chunked, the body is refused while it streams in (src/flts/web.py: BodySizeLimit)."""
    body = json.dumps({"windows": [rows] * 20}).encode()
    content = iter([body[i : i + 1024] for i in range(0, len(body), 1024)]) if chunked else body
    with _client(gru_model, max_request_bytes=4096) as client:
        response = client.post("/predict", content=content, headers={"content-type": "application/json"})
        metrics = client.get("/metrics/").text
        under_the_limit = client.post("/predict", json={"rows": rows})
    assert response.status_code == 413 and "4096" in response.json()["detail"]
    assert 'flts_predictions_total{outcome="too_large"}' in metrics
    assert under_the_limit.status_code == 200


def test_a_request_that_waits_too_long_is_a_504_and_counted(gru_model, rows):
    with _client(gru_model, request_timeout_seconds=0.05, micro_batch_wait_ms=100, micro_batch_requests=8) as client:
        response = client.post("/predict", json={"rows": rows})
        metrics = client.get("/metrics/").text
    assert response.status_code == 504 and "took too long" in response.json()["detail"]
    assert 'flts_predictions_total{outcome="timed_out"}' in metrics


def test_the_openapi_schema_documents_the_body_and_the_refusals(client):
    operation = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"rows", "windows", "data", "inference_length", "identifier"} <= set(schema["properties"])
    assert {"422", "429", "504"} <= set(operation["responses"])


# ------------------------------------------------------------------------------ gaps at serving time


def _served_features(model, rows: list[dict]) -> np.ndarray:
    window = model.window_from_rows(rows)
    return model.transform.matrix(window.nanoseconds, window.values, window.gap)


def _training_features(raw_data, rows: list[dict]) -> np.ndarray:
    """What preprocess makes of the same rows inside the test file (same train split, so the same scaler)."""
    train, test = raw_data
    edited = test.set_index("time")
    for row in rows:
        for column, value in row.items():
            if column != "time":
                edited.loc[row["time"], column] = np.nan if value is None else value
    kept = [row["time"] for row in rows]
    dropped = edited.index[(edited.index > kept[0]) & (edited.index < kept[-1]) & ~edited.index.isin(kept)]
    processed = preprocess(train, edited.drop(index=dropped).reset_index(), CONFIG)
    frame = processed.test
    stamps = frame["time"].dt.tz_localize(None).astype(str).str.replace(" ", "T")
    last = int(np.flatnonzero(stamps == rows[-1]["time"])[0])
    return frame[processed.metadata.feature_columns].iloc[last - 9 : last + 1].to_numpy()


def test_null_cells_are_filled_as_in_training_with_the_gap_flag(gru_model, raw_data, rows):
    rows[5]["up"] = None
    rows[6]["up"] = None
    rows[8]["mcs_up"] = None
    served = _served_features(gru_model, rows)
    np.testing.assert_allclose(served, _training_features(raw_data, rows), rtol=1e-6, atol=1e-6)
    gap = gru_model.metadata.feature_columns.index("is_gap")
    assert served[:, gap].tolist() == [0, 0, 0, 1, 1, 0, 1, 0, 0, 0]  # the last 10 of 12 rows


def test_a_missing_step_is_inserted_and_filled_as_in_training(gru_model, raw_data, rows):
    del rows[7]
    served = _served_features(gru_model, rows)
    np.testing.assert_allclose(served, _training_features(raw_data, rows), rtol=1e-6, atol=1e-6)


def test_a_window_with_missing_cells_is_answered_and_says_which_were_filled(client, rows):
    rows[9]["mcs_up"] = None
    rows[10].pop("rb_up")
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filled"] == [
        {"ts": rows[9]["time"] + "Z", "column": "mcs_up"},
        {"ts": rows[10]["time"] + "Z", "column": "rb_up"},
    ]
    assert all(math.isfinite(v) for k, v in body["predictions"][0].items() if k != "ts")
    batch = client.post("/predict", json={"windows": [rows, rows]}).json()
    assert [cell["window"] for cell in batch["filled"]] == [0, 0, 1, 1]


def test_a_complete_window_fills_nothing(client, rows):
    assert client.post("/predict", json={"rows": rows}).json()["filled"] == []


@pytest.mark.parametrize(
    "blank, fragment",
    [
        (lambda rows: [row.update(down=None) for row in rows], "column 'down' has no value in the last 10 steps"),
        (
            lambda rows: [row.update({c: None for c in list(row)[1:7]}) for row in rows[2:]],
            "too much of the window is missing",
        ),
    ],
)
def test_a_mostly_missing_window_is_a_422(client, rows, blank, fragment):
    blank(rows)
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 422 and fragment in response.text, response.text


# ------------------------------------------------------------------------------ the latest known rows


@pytest.fixture
def seeded(gru_model, processed) -> Iterator[TestClient]:
    with _client(gru_model, gru_model.window_from_processed(processed.test)) as client:
        yield client


@pytest.mark.parametrize("body", [{}, {"inference_length": 1}, {"identifier": "global"}])
def test_a_body_without_rows_forecasts_from_the_latest_known_rows(seeded, body, raw_data, processed):
    response = seeded.post("/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    last = processed.test["time"].iloc[-1]
    assert pd.Timestamp(answer["last_row_ts"]) == last
    assert pd.Timestamp(answer["predictions"][0]["ts"]) == last + pd.Timedelta(minutes=2)
    explicit = seeded.post("/predict", json=window_request(raw_data[1], 10)).json()
    assert _close(explicit["predictions"][0], answer["predictions"][0], rel=1e-4)


def test_the_earlier_clients_length_is_forecast_from_the_latest_rows(seeded):
    answer = seeded.post("/predict", json={"inference_length": 5}).json()
    assert len(answer["predictions"]) == 5
    assert seeded.get("/model-info").json()["latest_row_ts"] == answer["last_row_ts"]


def test_without_known_rows_a_body_without_rows_is_a_422(client):
    response = client.post("/predict", json={"inference_length": 1})
    assert response.status_code == 422 and "no recent rows are known for 'global'" in response.text


# ------------------------------------------------------------------------------ never a 5xx for a bad value


@pytest.mark.parametrize("value", [1e300, -1e300])
def test_a_value_too_large_to_scale_is_a_422_naming_the_cell(client, rows, value):
    rows[10]["down"] = value
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 422, response.text
    assert "column 'down', row 11" in response.text and "too far outside" in response.text


def _rows_ending_at(rows: list[dict], last: str) -> list[dict]:
    end = pd.Timestamp(last)
    return [
        {**row, "time": (end - pd.Timedelta(minutes=2) * (len(rows) - 1 - i)).isoformat()} for i, row in enumerate(rows)
    ]


def test_a_horizon_beyond_the_last_timestamp_is_a_422_naming_the_step(client, rows):
    late = _rows_ending_at(rows, "2262-04-11T23:00:00")
    response = client.post("/predict", json={"rows": late, "inference_length": 60})
    assert response.status_code == 422, response.text
    assert "step 24 of the forecast falls after 2262-04-11T23:47:16Z" in response.text
    assert client.post("/predict", json={"rows": late, "inference_length": 23}).status_code == 200


@pytest.mark.parametrize("when", ["1600-01-01T00:00:00", "2263-01-01T00:00:00"])
def test_a_timestamp_outside_the_served_range_is_a_422_naming_the_row(client, rows, when):
    rows[0]["time"] = when
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 422, response.text
    assert "row 1: time" in response.text and "outside the range served" in response.text


def test_a_loaded_champion_is_seeded_from_the_end_of_its_lineages_processed_data(gru_model, processed):
    """The loader reads processed-data/<identifier>/<config_hash>/test.parquet (a stand-in store serves it)."""
    import io

    from inference_container.champions import ChampionLoader

    class Store:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get_bytes(self, uri: str) -> bytes:
            self.asked.append(uri)
            buffer = io.BytesIO()
            processed.test.to_parquet(buffer, index=False)
            return buffer.getvalue()

    loader = ChampionLoader(InferenceSettings(), Champions())
    loader._store = store = Store()
    latest = loader.latest_rows(gru_model)
    assert store.asked == [f"s3://processed-data/global/{'f' * 64}/test.parquet"]
    assert latest is not None and pd.Timestamp(latest.nanoseconds[-1], tz="UTC") == processed.test["time"].iloc[-1]
    expected = window_request(processed.test.tail(10), 10)["rows"]
    assert [pd.Timestamp(row["time"]).value for row in expected] == latest.nanoseconds.tolist()


# ------------------------------------------------------------------------------ bundles of other versions


def _bundle(model: ServingModel, bundle: Path, directory: Path, edit: Callable[[dict], None]) -> Path:
    """The model's bundle as another version might have written it: its preprocessing.json edited."""
    shutil.copytree(bundle, directory, dirs_exist_ok=True)
    document = model.metadata.to_json()
    edit(document)
    (directory / PREPROCESSING_FILE).write_text(json.dumps(document))
    return directory


def test_a_bundle_without_the_lineage_fields_and_with_unknown_keys_loads_and_forecasts_the_same(
    gru_model, gru_bundle, tmp_path, rows
):
    def older(document: dict) -> None:
        for key in ("config_hash", "dataset_id"):
            document.pop(key, None)
        document["a_key_since_removed"] = {"any": "value"}

    model = ServingModel.load(_bundle(gru_model, gru_bundle, tmp_path, older), gru_model.identity, 10)
    window = [model.window_from_rows(rows)]
    expected = gru_model.forecast([gru_model.window_from_rows(rows)], 1)
    np.testing.assert_allclose(model.forecast(window, 1).values, expected.values)


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda d: d.pop("grid_anchor"), "grid_anchor: Field required"),
        (lambda d: d["config"]["windows"].update(input_seq_len="ten"), "config.windows.input_seq_len"),
        (lambda d: d.update(version=99), "version 99 is newer than this version reads"),
    ],
)
def test_a_bundle_this_version_cannot_use_is_refused_at_load_naming_the_file_and_field(
    gru_model, gru_bundle, tmp_path, edit, named
):
    directory = _bundle(gru_model, gru_bundle, tmp_path, edit)
    with pytest.raises(MetadataError, match=re.escape(named)) as refused:
        ServingModel.load(directory, gru_model.identity, 10)
    assert str(directory / PREPROCESSING_FILE) in str(refused.value)
