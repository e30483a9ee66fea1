import json

import pytest

from flts.messages import DatasetUploaded, MessageError, ModelTraining, ObjectRef, TrainingData

SHA = "a" * 64


def _ref(key: str = "k.csv") -> ObjectRef:
    return ObjectRef(uri=f"s3://datasets/{key}", sha256=SHA, size_bytes=10, rows=3)


def _training_data() -> TrainingData:
    return TrainingData(
        config_hash=SHA,
        dataset_id="d1",
        train=_ref("train.parquet"),
        validation=_ref("val.parquet"),
        test=_ref("test.parquet"),
        metadata=_ref("meta.json"),
        time_column="time",
        feature_columns=["down", "up"],
        target_columns=["down"],
        frequency="2min",
    )


def test_round_trip_keeps_every_field():
    message = _training_data()
    assert TrainingData.from_bytes(message.to_bytes()) == message


def test_every_message_carries_version_and_event_id():
    payload = json.loads(_training_data().to_bytes())
    assert payload["schema_version"] == 1
    assert len(payload["event_id"]) == 32


def test_key_is_the_lineage_hash_so_one_lineage_stays_on_one_partition():
    assert _training_data().key == SHA
    uploaded = DatasetUploaded(dataset_id="ds-1", train=_ref(), filename="a.csv", columns=["time", "x"])
    assert uploaded.key == "ds-1"


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (None, "empty"),
        (b"not json", "Invalid JSON"),
        (b"{}", "config_hash"),
        (b'{"schema_version": 2}', "schema_version"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_reason(raw, fragment):
    with pytest.raises(MessageError, match=fragment):
        ModelTraining.from_bytes(raw)


def test_unknown_fields_are_rejected():
    payload = json.loads(_training_data().to_bytes())
    payload["surprise"] = 1
    with pytest.raises(MessageError, match="surprise"):
        TrainingData.from_bytes(json.dumps(payload).encode())


def test_object_refs_must_be_s3_uris_with_a_sha256():
    with pytest.raises(ValueError):
        ObjectRef(uri="/etc/passwd", sha256=SHA, size_bytes=1)
    with pytest.raises(ValueError):
        ObjectRef(uri="s3://datasets/x", sha256="nothex", size_bytes=1)
