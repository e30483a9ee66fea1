"""How a measurement moves an identifier's window (no Kafka): advance, late, too old, gaps, a new champion."""

from __future__ import annotations

import dataclasses
from datetime import UTC

import numpy as np
import pandas as pd
import pytest

from flts.config import InferenceSettings
from flts.messages import Measurement
from inference_container.champions import Champions
from inference_container.streaming import RowError, StreamForecaster


def _as(model, identifier: str, version: str):
    identity = dataclasses.replace(model.identity, identifier=identifier, model_version=version)
    return dataclasses.replace(model, identity=identity)


@pytest.fixture
def stream(persistence_model, processed):
    champions = Champions()
    seed = persistence_model.window_from_processed(processed.test.iloc[:50])
    champions.install(_as(persistence_model, "a", "1"), seed)
    return StreamForecaster(InferenceSettings(), champions, producer=None), champions


def _row(raw_data, index: int, identifier: str = "a", **changes) -> Measurement:
    row = raw_data[1].iloc[index]
    values = {name: float(row[name]) for name in raw_data[1].columns if name != "time"}
    values.update(changes)
    return Measurement(identifier=identifier, ts=pd.Timestamp(row["time"]).tz_localize(UTC), values=values)


def test_a_row_after_the_last_advances_the_window_that_predict_without_rows_uses(stream, raw_data):
    forecaster, champions = stream
    model, window, _ = forecaster.apply(_row(raw_data, 50))
    assert window is champions.latest("a")
    assert window.last_ns == pd.Timestamp(raw_data[1]["time"].iloc[50]).tz_localize(UTC).value
    assert np.isclose(window.values[-1, 0], raw_data[1][model.measured_columns[0]].iloc[50])


def test_late_duplicate_and_too_old_rows_are_handled_deterministically(stream, raw_data):
    forecaster, champions = stream
    forecaster.apply(_row(raw_data, 50))
    assert forecaster.apply(_row(raw_data, 48, down=1.0)) == "late"
    assert champions.latest("a").values[-3, 0] == 1.0  # the last of duplicates wins, as in preprocessing
    assert forecaster.apply(_row(raw_data, 50, down=2.0)) == "late"
    assert forecaster.apply(_row(raw_data, 50 - forecaster.champions.get("a").rows_needed)) == "too_old"
    assert champions.latest("a").last_ns == pd.Timestamp(raw_data[1]["time"].iloc[50]).tz_localize(UTC).value


def test_skipped_steps_and_missing_cells_are_filled_and_marked_as_gaps(stream, raw_data):
    forecaster, _ = stream
    _, window, _ = forecaster.apply(_row(raw_data, 53, up=None))  # steps 50-52 never arrived
    assert window.gap[-4:].tolist() == [True, True, True, True]
    assert np.isfinite(window.values).all()


def test_a_column_the_champion_does_not_read_is_refused(stream, raw_data):
    forecaster, _ = stream
    with pytest.raises(RowError, match="not read by the champion"):
        forecaster.apply(_row(raw_data, 50, temperature=3.0))


def test_no_champion_and_a_new_champion_on_the_next_row(stream, raw_data, gru_model):
    forecaster, champions = stream
    assert forecaster.apply(_row(raw_data, 50, identifier="b")) == "no_champion"
    first, _, _ = forecaster.apply(_row(raw_data, 50))
    champions.install(_as(gru_model, "a", "2"))
    second, window, _ = forecaster.apply(_row(raw_data, 51))
    assert (first.identity.model_version, second.identity.model_version) == ("1", "2")
    assert window.last_ns - window.nanoseconds[0] == (second.rows_needed - 1) * second.step_ns


class _Message:
    def __init__(self, row: Measurement) -> None:
        self._value = row.to_bytes()

    def value(self) -> bytes:
        return self._value


class _BrokerDown:
    """A transactional producer whose broker went away after the transaction began."""

    def __init__(self) -> None:
        self.aborted = False

    def begin(self):
        pass

    def publish_many(self, topic, events):
        raise ConnectionError("broker unreachable")

    def abort(self):
        self.aborted = True


def test_a_batch_that_cannot_be_published_leaves_the_windows_as_they_were_so_its_redelivery_is_forecast(
    stream, raw_data
):
    forecaster, champions = stream
    before = champions.latest("a")
    forecaster.producer = producer = _BrokerDown()
    with pytest.raises(ConnectionError):
        forecaster.handle_batch([_Message(_row(raw_data, 50)), _Message(_row(raw_data, 49, down=1.0))], consumer=None)
    assert producer.aborted
    assert champions.latest("a") is before
    _, window, _ = forecaster.apply(_row(raw_data, 50))  # delivered again: advances and is forecast
    assert window.last_ns > before.last_ns
