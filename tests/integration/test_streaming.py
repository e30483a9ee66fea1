"""Live forecasts on the real broker: measurements in, forecasts out, per identifier and champion."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC

import pandas as pd
import pytest

from flts.kafka import MessageProducer
from flts.messages import DeadLetter, Forecast, Measurement
from inference_container.champions import Champions
from inference_container.streaming import stream_forecasts

pytestmark = pytest.mark.integration


def _as(model, identifier: str, version: str):
    return dataclasses.replace(
        model, identity=dataclasses.replace(model.identity, identifier=identifier, model_version=version)
    )


def _rows(raw_data, identifier: str, start: int, count: int) -> list[Measurement]:
    frame = raw_data[1].iloc[start : start + count]
    columns = [name for name in frame.columns if name != "time"]
    return [
        Measurement(
            identifier=identifier,
            ts=pd.Timestamp(row["time"]).tz_localize(UTC),
            values={name: float(row[name]) for name in columns},
        )
        for _, row in frame.iterrows()
    ]


@pytest.fixture
def streaming(inference_settings):
    """The stream forecaster of an inference replica, on its own thread, stopped after the test."""
    champions, stop = Champions(), threading.Event()
    worker = threading.Thread(target=stream_forecasts, args=(inference_settings, champions, stop), daemon=True)
    worker.start()
    yield champions
    stop.set()
    worker.join(30)


def test_rows_in_forecasts_out_per_champion_and_a_promotion_switches_on_the_next_row(
    inference_settings, streaming, gru_model, persistence_model, processed, raw_data, read_topic
):
    settings, champions = inference_settings, streaming
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    seed = gru_model.window_from_processed(processed.test.iloc[:100])
    champions.install(_as(gru_model, a, "1"), seed)
    champions.install(_as(persistence_model, b, "2"), seed)
    producer = MessageProducer(settings)
    rows = _rows(raw_data, a, 100, 5) + _rows(raw_data, b, 100, 5)
    producer.publish_many(settings.topic_measurements, rows)
    producer.send(settings.topic_measurements, a, b"not a measurement", {})
    unknown = _rows(raw_data, a, 105, 1)[0]
    producer.publish(settings.topic_measurements, unknown.model_copy(update={"values": {"temperature": 3.0}}))

    forecasts = read_topic(settings, settings.topic_forecasts, 10, Forecast.from_bytes)
    assert len(forecasts) == 10
    by_identifier = {a: [f for f in forecasts if f.identifier == a], b: [f for f in forecasts if f.identifier == b]}
    assert {f.model_version for f in by_identifier[a]} == {"1"}
    assert {f.model_version for f in by_identifier[b]} == {"2"}
    for identifier, sent in ((a, rows[:5]), (b, rows[5:])):
        assert [f.last_observed for f in by_identifier[identifier]] == [r.ts for r in sent]
        first = by_identifier[identifier][0]
        assert len(first.ts) == gru_model.output_seq_len and set(first.values) == set(gru_model.target_columns)
    assert champions.latest(a).last_ns == pd.Timestamp(rows[4].ts).value  # what /predict without rows uses

    champions.install(_as(persistence_model, a, "3"))
    producer.publish_many(settings.topic_measurements, _rows(raw_data, a, 106, 1))
    forecasts = read_topic(settings, settings.topic_forecasts, 11, Forecast.from_bytes)
    assert [f.model_version for f in forecasts if f.identifier == a][-1] == "3"

    letters = read_topic(settings, settings.topic_dead_letter, 2, DeadLetter.model_validate_json)
    unknown_column, not_a_message = sorted((letter.reason for letter in letters), key=lambda r: "Invalid JSON" in r)
    assert "not read by the champion" in unknown_column and "temperature" in unknown_column
    assert "Invalid JSON" in not_a_message
