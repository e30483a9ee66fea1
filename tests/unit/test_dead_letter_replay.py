"""`flts dead-letters replay` publishes with the admin's rights, so it publishes only what the pipeline would: a
letter's topic must be one the pipeline consumes and its group one that consumes that topic (flts.kafka_users).
Against the real broker: tests/integration/test_dead_letters.py."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pytest
from typer.testing import CliRunner

from flts import deadletters
from flts.cli import app
from flts.deadletters import Letter, ReplayRefused, replay, replay_refusal, replay_targets
from flts.messages import DeadLetter
from flts.settings import (
    CommonSettings,
    EvalSettings,
    InferenceSettings,
    NonmlSettings,
    PreprocessSettings,
    TrainSettings,
)
from inference_container.scoring import scoring_group
from inference_container.streaming import streaming_group

SETTINGS = CommonSettings()
INFERENCE = InferenceSettings()
# Each consumer of the pipeline: the topic it reads and the group it reads it in (as its code names them).
PIPELINE_PAIRS = [
    (SETTINGS.topic_dataset_uploaded, PreprocessSettings().consumer_group),
    (SETTINGS.topic_training_data, TrainSettings(model_type="GRU").consumer_group),
    (SETTINGS.topic_training_data, TrainSettings(model_type="LSTM").consumer_group),
    (SETTINGS.topic_training_data, NonmlSettings().consumer_group),
    (SETTINGS.topic_model_training, EvalSettings().consumer_group),
    (SETTINGS.topic_model_selected, f"{INFERENCE.consumer_group}-host-1a2b3c4d"),  # a replica's follower
    (SETTINGS.topic_inference_data, scoring_group(INFERENCE)),
    (SETTINGS.topic_measurements, streaming_group(INFERENCE)),
]
OTHER_PAIRS = {
    "a champion announced by a group that does not read announcements": (SETTINGS.topic_model_selected, "flts-eval"),
    "uploads fed to a trainer's group": (
        SETTINGS.topic_dataset_uploaded,
        TrainSettings(model_type="GRU").consumer_group,
    ),
    "the dead-letter topic itself": (SETTINGS.topic_dead_letter, "flts-preprocess"),
    "a topic the pipeline only writes": (SETTINGS.topic_forecasts, "flts-inference"),
    "a topic not the pipeline's": ("__consumer_offsets", "flts-preprocess"),
    "an unknown group": (SETTINGS.topic_training_data, "someone-else"),
}


def letter(topic: str, group: str, offset: int = 0) -> Letter:
    dead = DeadLetter(
        source_topic=topic, partition=0, offset=offset, key="k", value_b64=base64.b64encode(b"{}").decode(),
        headers={"kind": "x"}, reason="failed", consumer_group=group,
    )  # fmt: skip
    return Letter(0, offset, dead)


@pytest.mark.parametrize("topic, group", PIPELINE_PAIRS)
def test_a_letter_from_the_group_that_consumes_a_pipeline_topic_may_be_replayed(topic, group):
    assert replay_refusal(SETTINGS, letter(topic, group).letter) is None


@pytest.mark.parametrize("case", sorted(OTHER_PAIRS))
def test_a_letter_naming_another_topic_or_group_is_refused_with_the_reason(case):
    topic, group = OTHER_PAIRS[case]
    reason = replay_refusal(SETTINGS, letter(topic, group).letter)
    assert reason is not None and (f"topic {topic!r} is not one" in reason or f"group {group!r} does not" in reason)


def test_the_replay_targets_are_exactly_the_topics_the_pipeline_consumes_in_a_group():
    assert set(replay_targets(SETTINGS)) == {topic for topic, _ in PIPELINE_PAIRS}


@dataclass
class FakeKafka:
    """The dead-letter topic's messages, what was published and which offsets were committed."""

    letters: list[Letter]
    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        kafka = self

        class Producer:
            def __init__(self, settings: Any) -> None:
                pass

            def send(self, topic: str, key: str | None, value: bytes, headers: dict[str, str]) -> None:
                kafka.published.append((topic, value, headers))

            def close(self) -> None:
                pass

        class Consumer:
            def commit(self, message: Letter, asynchronous: bool) -> None:
                kafka.committed.append(message.offset)

            def close(self) -> None:
                pass

        monkeypatch.setattr(deadletters, "MessageProducer", Producer)
        monkeypatch.setattr(deadletters, "_consumer", lambda settings, group: Consumer())
        monkeypatch.setattr(deadletters, "_read", lambda consumer, topic, idle: ((item, item) for item in self.letters))


def _three_letters() -> list[Letter]:
    return [
        letter(SETTINGS.topic_model_training, "flts-eval", 0),
        letter(SETTINGS.topic_model_selected, "flts-eval", 1),  # what a compromised eval could write
        letter(SETTINGS.topic_training_data, "flts-train-gru", 2),
    ]


def test_replay_stops_at_a_refused_letter_having_replayed_and_committed_only_those_before_it(monkeypatch):
    kafka = FakeKafka(_three_letters())
    kafka.install(monkeypatch)
    with pytest.raises(ReplayRefused, match="dead letter 0:1 is not replayed: group 'flts-eval' does not consume"):
        replay(SETTINGS)
    assert [topic for topic, _, _ in kafka.published] == [SETTINGS.topic_model_training]
    assert kafka.committed == [0]


def test_replay_told_to_skip_refused_letters_passes_over_them_without_publishing(monkeypatch):
    kafka = FakeKafka(_three_letters())
    kafka.install(monkeypatch)
    replayed = replay(SETTINGS, skip_refused=True)
    assert [item.offset for item in replayed.sent] == [0, 2]
    assert [(item.offset, "does not consume" in reason) for item, reason in replayed.skipped] == [(1, True)]
    assert [topic for topic, _, _ in kafka.published] == [SETTINGS.topic_model_training, SETTINGS.topic_training_data]
    assert all(headers[deadletters.REPLAYED_FROM] for _, _, headers in kafka.published)
    assert kafka.committed == [0, 1, 2]


def test_the_replay_command_says_why_it_stopped_and_exits_1(monkeypatch):
    kafka = FakeKafka(_three_letters())
    kafka.install(monkeypatch)
    result = CliRunner().invoke(app, ["dead-letters", "replay"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert (
        "1 dead letter(s) replayed" in text and "dead letter 0:1 is not replayed" in text and "--skip-refused" in text
    )
