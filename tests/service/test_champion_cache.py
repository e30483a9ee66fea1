"""The champions a replica holds: at most `capacity` in memory, least recently used dropped, the rest known and
loaded on demand; an identifier's latest rows outlive its dropped model. Real small models, no registry."""

from __future__ import annotations

import dataclasses

import numpy as np

from flts.predict import ServingModel, Window
from inference_container.champions import ChampionRef, Champions


def _as(model: ServingModel, identifier: str, version: str = "1") -> ServingModel:
    identity = dataclasses.replace(model.identity, identifier=identifier, model_version=version, run_id=identifier)
    return dataclasses.replace(model, identity=identity)


def _window(model: ServingModel, last_ns: int) -> Window:
    steps = last_ns - model.step_ns * np.arange(model.rows_needed - 1, -1, -1, dtype=np.int64)
    rows, columns = model.rows_needed, len(model.measured_columns)
    return Window(steps, np.zeros((rows, columns)), np.zeros(rows, bool), np.zeros(rows, np.int64))


def test_the_least_recently_used_champion_is_dropped_and_stays_known(gru_model) -> None:
    champions = Champions(capacity=2)
    champions.install(_as(gru_model, "a"))
    champions.install(_as(gru_model, "b"))
    assert champions.loaded("a") is not None  # a use: b is now the least recently used
    champions.install(_as(gru_model, "c"))
    assert [m.identity.identifier for m in champions.all()] == ["a", "c"]
    assert champions.peek("b") is None and champions.known("b") == ChampionRef("1", "b")
    assert champions.identifiers() == ["a", "b", "c"]
    assert champions.peek("a") is not None  # a look (listings, the reconciler) is not a use: a stays oldest
    champions.install(_as(gru_model, "d"))
    assert [m.identity.identifier for m in champions.all()] == ["c", "d"]


def test_a_known_champion_that_is_not_held_is_loaded_on_demand_and_an_unknown_one_is_not(gru_model) -> None:
    champions = Champions(capacity=1)
    asked: list[str] = []

    def load(identifier: str) -> ServingModel:
        asked.append(identifier)
        model = _as(gru_model, identifier)
        champions.install(model)
        return model

    champions.load_on_demand = load
    champions.install(_as(gru_model, "a"))
    champions.install(_as(gru_model, "b"))
    assert champions.get("nobody") is None and asked == []
    assert champions.get("a") is not None and asked == ["a"]
    assert [m.identity.identifier for m in champions.all()] == ["a"]


def test_the_latest_rows_outlive_a_dropped_model_and_the_newer_of_two_windows_is_kept(gru_model) -> None:
    champions = Champions(capacity=1)
    streamed = _window(gru_model, 10**18)
    champions.install(_as(gru_model, "a"))
    champions.remember("a", streamed)
    champions.install(_as(gru_model, "b"))  # drops a
    older_data_end = _window(gru_model, 10**18 - 3600 * 10**9)
    champions.install(_as(gru_model, "a"), latest=older_data_end)
    assert champions.latest("a") is streamed, "the lineage's older data end replaced the newer streamed rows"
    newer_data_end = _window(gru_model, 10**18 + 3600 * 10**9)
    champions.install(_as(gru_model, "a", "2"), latest=newer_data_end)
    assert champions.latest("a") is newer_data_end


def test_champions_are_held_within_a_byte_budget_whatever_their_count(gru_model) -> None:
    """A composite holds up to eight models: the budget counts what the bundles take, not how many champions."""
    size = gru_model.bundle_bytes
    assert size > 0, "a loaded model knows its bundle's size"
    champions = Champions(max_bytes=int(size * 4.5))
    champions.install(_as(gru_model, "a"))
    champions.install(dataclasses.replace(_as(gru_model, "composite"), member_bytes=2 * size))  # 3 models' worth
    champions.install(_as(gru_model, "b"))  # 5 in all: the least recently used goes
    assert [m.identity.identifier for m in champions.all()] == ["composite", "b"]
    champions.pin({"composite"})
    champions.install(_as(gru_model, "c"))  # a pinned series stays; b goes
    assert [m.identity.identifier for m in champions.all()] == ["composite", "c"]
    champions.install(dataclasses.replace(_as(gru_model, "huge"), member_bytes=10 * size))
    assert [m.identity.identifier for m in champions.all()] == ["composite", "huge"], "the one just installed stays"
