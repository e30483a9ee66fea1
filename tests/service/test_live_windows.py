"""How a measurement moves an identifier's window (no Kafka): advance, late, too old, gaps, a new champion."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from serving_models import ConsumedMeasurement

from flts.kafka import TransactionStuck
from flts.messages import DeadLetter, Measurement
from flts.predict import ServingModel
from flts.settings import InferenceSettings
from inference_container.champions import ChampionRef, Champions
from inference_container.streaming import (
    MAX_DELIVERIES,
    ChampionUnavailable,
    Redelivery,
    RowError,
    StreamForecaster,
    is_transient,
)


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
        forecaster.handle_batch(
            [ConsumedMeasurement(_row(raw_data, 50)), ConsumedMeasurement(_row(raw_data, 49, down=1.0))], consumer=None
        )
    assert producer.aborted
    assert champions.latest("a") is before
    _, window, _ = forecaster.apply(_row(raw_data, 50))  # delivered again: advances and is forecast
    assert window.last_ns > before.last_ns


class _Kept:
    """A transactional producer that keeps what each committed transaction published (no broker)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, object]] = []
        self.committed: list[tuple[str, object]] = []

    def begin(self):
        self.pending = []

    def publish_many(self, topic, events):
        self.pending.extend((topic, event) for event in events)

    def send(self, topic, key, value, headers):
        self.pending.append((topic, value))

    def commit(self, consumer, messages):
        self.committed.extend(self.pending)

    def abort(self):
        self.pending = []


class _Failing(ServingModel):
    """A champion whose forward pass raises, as a broken composite member would."""

    def forecast(self, windows, length):
        raise ValueError("this model cannot forecast")


def test_a_row_whose_known_champion_cannot_be_loaded_fails_its_batch_but_an_unknown_identifier_is_no_champion(
    stream, raw_data
):
    """A champion the registry names but that could not be loaded (MLflow or S3 down) is an outage to wait out, not
    a row to drop: the batch fails and is delivered again; an identifier without any champion is skipped."""
    forecaster, champions = stream
    champions.know("b", ChampionRef("3", "run-b"))
    champions.load_on_demand = lambda identifier: None  # the download failed
    with pytest.raises(ChampionUnavailable):
        forecaster.apply(_row(raw_data, 50, identifier="b"))
    assert forecaster.apply(_row(raw_data, 50, identifier="c")) == "no_champion"
    forecaster.producer = _Kept()
    with pytest.raises(ChampionUnavailable):
        forecaster.handle_batch(
            [ConsumedMeasurement(_row(raw_data, 50)), ConsumedMeasurement(_row(raw_data, 50, identifier="b"), 1)], None
        )
    assert forecaster.producer.committed == [], "a batch with a row that could not be forecast yet was committed"


def test_a_replica_holds_the_champions_of_the_series_it_owns_beyond_its_capacity(
    persistence_model, processed, raw_data
):
    """The stream pins its partitions' series: with more of them than max_loaded_champions, each stays held (no
    download per row); once the partition is revoked they may be dropped again."""
    champions = Champions(capacity=1)
    forecaster = StreamForecaster(InferenceSettings(), champions, producer=_Kept())
    for identifier in ("a", "b", "c"):
        champions.install(_as(persistence_model, identifier, "1"))
    assert [champions.peek(i) is not None for i in ("a", "b", "c")] == [False, False, True]
    loads = []

    def load(identifier):
        loads.append(identifier)
        champions.install(_as(persistence_model, identifier, "1"))
        return champions.loaded(identifier)

    champions.load_on_demand = load
    rows = [
        ConsumedMeasurement(_row(raw_data, 50 + step, identifier=i), step) for step in range(3) for i in ("a", "b", "c")
    ]
    forecaster.handle_batch(rows, None)
    assert sorted(loads) == ["a", "b"], "a series of an owned partition was downloaded more than once"
    forecaster.disown([TopicPartition("measurements", 0)])
    champions.install(_as(persistence_model, "d", "1"))
    assert sum(champions.peek(i) is not None for i in ("a", "b", "c", "d")) == 1


def test_a_row_that_keeps_failing_on_its_own_is_dead_lettered_and_the_rest_of_its_batch_is_forecast(
    stream, raw_data, persistence_model, processed
):
    forecaster, champions = stream
    broken = _as(persistence_model, "b", "1")
    seed = persistence_model.window_from_processed(processed.test.iloc[:50])
    champions.install(
        _Failing(**{field.name: getattr(broken, field.name) for field in dataclasses.fields(broken)}), seed
    )
    forecaster.producer = producer = _Kept()
    batch = [ConsumedMeasurement(_row(raw_data, 50), 0), ConsumedMeasurement(_row(raw_data, 50, identifier="b"), 1)]
    redelivery = Redelivery(threading.Event())
    redelivery.wait_s = 0.0
    for _ in range(MAX_DELIVERIES):
        with pytest.raises(ValueError):
            redelivery.handle(forecaster, batch, None)
        redelivery.strikes += 1
    redelivery.handle(forecaster, batch, None)  # a row per transaction now
    topics = [topic for topic, _ in producer.committed]
    assert topics == [forecaster.settings.topic_forecasts, forecaster.settings.topic_dead_letter]
    letter = DeadLetter.model_validate_json(producer.committed[1][1])
    assert letter.offset == 1 and "this model cannot forecast" in letter.reason
    assert redelivery.strikes == 0


@pytest.mark.parametrize(
    "failure, transient",
    [
        (ChampionUnavailable("the download failed"), True),
        (KafkaException(KafkaError(KafkaError._TRANSPORT)), True),
        (TransactionStuck("send_offsets_to_transaction did not return"), True),
        (ConnectionError("S3 unreachable"), True),
        (KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), False),
        (ValueError("this model cannot forecast"), False),
    ],
)
def test_outages_are_waited_out_and_what_fails_the_same_way_again_is_a_strike(failure, transient):
    """Waited out for as long as it lasts, or counted towards the row being dead-lettered alone."""
    assert is_transient(failure) is transient


def test_a_batch_whose_transaction_call_got_stuck_is_delivered_again_through_a_new_producer(stream, raw_data):
    """A producer whose transactional call never returned (librdkafka#5456 after a broker restart) cannot be used
    again: the batch is redelivered, and published through a fresh producer (its transactional id fences the old)."""
    forecaster, _ = stream
    stuck = forecaster.producer = _Kept()
    redelivery = Redelivery(threading.Event())
    redelivery.wait_s = 0.0
    batch = [ConsumedMeasurement(_row(raw_data, 50), 0)]
    redelivery.failed(forecaster, batch, _Seekable(), TransactionStuck("commit_transaction did not return"))
    assert forecaster.producer is not stuck and redelivery.strikes == 0


class _Seekable:
    def seek(self, partition):
        pass
