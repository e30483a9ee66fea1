"""Batch scoring on the real stack: claims on Kafka, rows and results in MinIO, a served champion in process."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from flts.kafka import ConsumerLoop, MessageProducer
from flts.messages import DeadLetter, InferenceData, InferenceScored, ObjectRef
from flts.settings import InferenceSettings
from flts.storage import ObjectStore, StoredObject
from inference_container.scoring import BatchScorer

pytestmark = pytest.mark.integration


def _ref(stored: StoredObject, rows: int | None = None) -> ObjectRef:
    return ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=rows)


def _score(settings: InferenceSettings, champions: dict, messages: list[bytes]) -> None:
    """Publish the messages, then consume exactly that many with a BatchScorer (60 s at most)."""
    producer = MessageProducer(settings)
    for value in messages:
        producer.send(settings.topic_inference_data, "it", value, {})
    scorer = BatchScorer(settings, champions.get)
    loop = ConsumerLoop(settings, settings.topic_inference_data, InferenceData, scorer.handle)
    worker = threading.Thread(target=loop.run, kwargs={"max_messages": len(messages)}, daemon=True)
    worker.start()
    worker.join(60)
    loop.stop()
    assert not worker.is_alive(), "the scorer did not handle every message within 60 s"


def _test_split_claim(settings: InferenceSettings, processed, dataset_id: str) -> InferenceData:
    """A claim of the processed test split, stored under a new identifier's prefix."""
    store = ObjectStore(settings)
    identifier = f"it-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    processed.test.to_parquet(buffer, index=False)
    prefix = f"s3://{settings.bucket_processed}/{identifier}/scoring-test"
    data = _ref(store.put_bytes(f"{prefix}/test.parquet", buffer.getvalue()), rows=len(processed.test))
    metadata = _ref(store.put_json(f"{prefix}/metadata.json", processed.metadata.to_json()))
    return InferenceData(identifier=identifier, dataset_id=dataset_id, data=data, metadata=metadata)


def test_a_claim_delivered_twice_is_scored_once_and_bad_claims_are_dead_lettered(
    inference_settings, gru_model, processed, read_topic
):
    settings, store = inference_settings, ObjectStore(inference_settings)
    claim = _test_split_claim(settings, processed, "d1")
    identifier = claim.identifier
    gone = claim.data.model_copy(update={"uri": claim.data.uri + ".gone"})
    missing = InferenceData(identifier=identifier, dataset_id="d2", data=gone, metadata=claim.metadata)

    _score(settings, {identifier: gru_model}, [claim.to_bytes(), claim.to_bytes(), missing.to_bytes(), b"{not json"])

    results = store.list(settings.bucket_inference_logs, f"{identifier}/")
    assert [o["Key"] for o in results] == [f"{identifier}/{claim.created_at:%Y-%m-%d}/{claim.claim_id}.parquet"]
    scored = read_topic(settings, settings.topic_inference_scored, 3, InferenceScored.from_bytes)
    assert len(scored) == 2 and scored[0].result == scored[1].result
    windows = len(processed.test) - gru_model.rows_needed + 1
    assert scored[0].windows == windows
    assert scored[0].result.rows == windows * gru_model.output_seq_len
    assert scored[0].model_version == gru_model.identity.model_version
    assert set(scored[0].mean_absolute_error) == set(gru_model.target_columns)
    letters = read_topic(settings, settings.topic_dead_letter, 3, DeadLetter.model_validate_json)
    reasons = sorted(letter.reason for letter in letters)
    assert len(reasons) == 2
    assert "claimed object is missing" in reasons[1] and "test.parquet.gone" in reasons[1]
    assert reasons[0].startswith("invalid message")


def test_raw_rows_are_put_on_the_champions_grid_and_scored(inference_settings, persistence_model, raw_data, read_topic):
    settings, store = inference_settings, ObjectStore(inference_settings)
    identifier = f"it-{uuid.uuid4().hex[:8]}"
    rows = raw_data[1].head(200)
    csv = rows.drop(index=rows.index[50:53]).to_csv(index=False).encode()  # three missing steps, filled
    data = _ref(store.put_bytes(f"s3://{settings.bucket_datasets}/{identifier}/scoring/c1.csv", csv), rows=197)
    claim = InferenceData(identifier=identifier, claim_id="c1", dataset_id="c1", rows="raw", data=data)

    _score(settings, {identifier: persistence_model}, [claim.to_bytes()])

    (scored,) = read_topic(settings, settings.topic_inference_scored, 1, InferenceScored.from_bytes)
    steps = len(rows.drop_duplicates(subset="time"))
    assert scored.windows == steps - persistence_model.rows_needed + 1
    assert scored.result.uri.endswith(f"/{identifier}/{claim.created_at:%Y-%m-%d}/c1.parquet")


def test_a_claim_older_than_the_scoring_wait_with_no_champion_is_dead_lettered_at_once(
    inference_settings, processed, read_topic
):
    """The wait for a lineage's champion counts from the claim's publication: a replica replaying old claims
    (one eval never decided) does not hold the claims behind them for the full wait again."""
    settings = inference_settings.model_copy(update={"scoring_wait_seconds": 600})
    store = ObjectStore(settings)
    published = datetime.now(UTC) - timedelta(seconds=2 * settings.scoring_wait_seconds)
    claim = _test_split_claim(settings, processed, "d3").model_copy(update={"created_at": published})
    identifier = claim.identifier

    _score(settings, {}, [claim.to_bytes()])  # fails unless handled within 60 s

    (letter,) = read_topic(settings, settings.topic_dead_letter, 1, DeadLetter.model_validate_json)
    assert f"no champion for identifier {identifier!r}" in letter.reason
    assert store.list(settings.bucket_inference_logs, f"{identifier}/") == []
