"""Eval's promotion records: what earlier versions wrote still reads, what this version cannot use is refused."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flts import records
from flts.records import ColumnComposite, EvalDecision, LeaderboardEntry, Promotion, RecordError, Selection

# A champion pointer as eval wrote it before the leaderboard, the column winners and the version were recorded.
FIRST_POINTER = {
    "config_hash": "c" * 64,
    "identifier": "cell-7",
    "model_type": "GRU",
    "run_id": "run-gru",
    "registered_model": "flts-cell-7",
    "model_version": 3,
    "score": 0.1,
    "reason": "every expected model type finished",
    "decided_at": "2026-11-23T04:05:00+00:00",
    "decided_at_ms": 1_795_406_700_000,
    "written_by_a_later_version": True,
}


def test_a_pointer_an_earlier_version_wrote_reads_with_defaults_for_what_it_lacks():
    pointer = Promotion.parse(FIRST_POINTER, "s3://promotion/cell-7/c/current.json")
    assert pointer.model_version == "3" and not pointer.interim
    assert pointer.leaderboard == [] and pointer.column_composite == ColumnComposite()
    assert pointer.version == records.RECORD_VERSION


def test_a_record_is_written_back_with_exactly_the_keys_it_was_read_with():
    stored = {k: v for k, v in FIRST_POINTER.items() if k != "written_by_a_later_version"}
    stored["leaderboard"] = [{"model_type": "GRU", "run_id": "run-gru", "score": 0.1}]
    written = Promotion.parse(stored, "pointer").to_json()
    assert written == {**stored, "model_version": "3"}


def test_a_leaderboard_entry_from_before_the_servable_flag_is_servable():
    entry = LeaderboardEntry.parse({"model_type": "GRU", "run_id": "r", "score": 0.2}, "history entry")
    assert entry.servable and entry.column_wins == [] and entry.not_servable_because is None


def test_a_malformed_record_is_refused_naming_the_file_and_the_field():
    broken = {**FIRST_POINTER, "score": "high", "leaderboard": [{"model_type": "GRU", "score": 0.1}]}
    with pytest.raises(RecordError) as refused:
        Promotion.parse(broken, "s3://promotion/cell-7/c/current.json")
    message = str(refused.value)
    assert "s3://promotion/cell-7/c/current.json" in message
    assert "score" in message and "leaderboard.0.run_id" in message


def test_a_decision_with_an_outcome_this_version_does_not_know_is_refused():
    with pytest.raises(RecordError, match="outcome"):
        EvalDecision.parse({"outcome": "postponed", "reason": "r", "decided_at_ms": 1}, "decision.json")


def test_a_record_of_a_newer_version_is_refused_with_both_versions():
    with pytest.raises(RecordError, match=rf"version 99 is newer .*\({records.RECORD_VERSION}\)"):
        EvalDecision.parse({"version": 99, "outcome": "promoted", "reason": "r", "decided_at_ms": 1}, "decision.json")


def test_the_selection_says_interim_only_when_the_pointer_does():
    final = Promotion.parse(FIRST_POINTER, "pointer")
    interim = Promotion.parse({**FIRST_POINTER, "interim": True}, "pointer")
    assert "interim" not in Selection.of(final).to_json()
    assert Selection.of(interim).to_json()["interim"] is True


def test_the_records_module_is_on_the_ground_floor():
    """Every container and the client read these records: the module imports nothing of flts."""
    tree = ast.parse(Path(records.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.split(".")[0] == "flts"]
