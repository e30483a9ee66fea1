"""Preprocess: `dataset-uploaded` -> processed splits, metadata and scaler in S3 -> `training-data` claim.

The claim is written to S3 last; its presence means the lineage is already processed, so the
same data and config are not processed twice (unless forced), and the claim is only published again.
"""

from __future__ import annotations

import io
import logging

import pandas as pd

from flts.config import PipelineConfig, load_pipeline_config
from flts.data.io import DataError, read_measurements
from flts.data.preprocess import ProcessedDataset, preprocess
from flts.kafka import MessageProducer, PermanentError
from flts.layout import (
    CLAIM_FILE,
    CONFIG_FILE,
    METADATA_FILE,
    SCALER_FILE,
    lineage_config_hash,
    processed_prefix,
    split_file,
)
from flts.messages import DatasetUploaded, InferenceData, ObjectRef, TrainingData
from flts.observability import log_context
from flts.runtime import run_consumer
from flts.settings import PreprocessSettings
from flts.storage import ObjectNotFound, ObjectStore, StoredObject, sha256_bytes

log = logging.getLogger(__name__)


class Preprocessor:
    def __init__(self, settings: PreprocessSettings, config: PipelineConfig) -> None:
        self.settings = settings
        self.config = config
        self.store = ObjectStore(settings)
        self.producer = MessageProducer(settings)

    def handle(self, upload: DatasetUploaded) -> None:
        test_sha256 = upload.test.sha256 if upload.test else None
        config_hash = lineage_config_hash(self.config, upload.identifier, upload.train.sha256, test_sha256)
        prefix = processed_prefix(self.settings, upload.identifier, config_hash)
        with log_context(config_hash=config_hash, dataset_id=upload.dataset_id, identifier=upload.identifier):
            claim_uri = f"{prefix}/{CLAIM_FILE}"
            if not upload.force and self.store.exists(claim_uri):
                log.info("lineage already processed; publishing its claims again")
                claim = TrainingData.model_validate(self.store.get_json(claim_uri))
                self._announce(claim.model_copy(update={"force": False}))
                return
            processed = preprocess(
                self._read(upload.train), self._read(upload.test) if upload.test else None, self.config
            )
            claim = self._write(upload, config_hash, prefix, processed)
            self.store.put_json(claim_uri, claim.model_dump(mode="json"))
            self._announce(claim)
            log.info("preprocessed", extra={"rows": processed.metadata.rows})

    def _announce(self, claim: TrainingData) -> None:
        """The lineage's two claims: training, and the scoring of its test split by the champion. Both are published
        again whenever the lineage is (a publish that failed halfway is retried whole); the scoring claim's id is
        the upload's, so inference writes its result once however often it is claimed."""
        scoring = InferenceData(
            config_hash=claim.config_hash,
            identifier=claim.identifier,
            dataset_id=claim.dataset_id,
            claim_id=f"{claim.dataset_id}-test",
            data=claim.test,
            metadata=claim.metadata,
        )
        self.producer.publish(self.settings.topic_training_data, claim)
        self.producer.publish(self.settings.topic_inference_data, scoring)

    def _read(self, ref: ObjectRef) -> pd.DataFrame:
        try:
            data = self.store.get_bytes(ref.uri)
        except ObjectNotFound as exc:
            raise PermanentError(f"uploaded object is missing: {ref.uri}") from exc
        if sha256_bytes(data) != ref.sha256:
            raise PermanentError(f"{ref.uri} does not match the sha256 in the message")
        try:
            return read_measurements(data, self.config.data, self.config.limits)
        except DataError as exc:
            raise PermanentError(f"{ref.uri}: {exc}") from exc

    def _write(
        self, upload: DatasetUploaded, config_hash: str, prefix: str, processed: ProcessedDataset
    ) -> TrainingData:
        metadata = processed.metadata.model_copy(update={"config_hash": config_hash, "dataset_id": upload.dataset_id})
        splits = {
            name: self._put_parquet(f"{prefix}/{split_file(name)}", frame)
            for name, frame in (
                ("train", processed.train),
                ("validation", processed.validation),
                ("test", processed.test),
            )
        }
        meta = _ref(self.store.put_json(f"{prefix}/{METADATA_FILE}", metadata.to_json()))
        self.store.put_json(f"{prefix}/{SCALER_FILE}", metadata.scaler)
        self.store.put_json(f"{prefix}/{CONFIG_FILE}", metadata.config.model_dump(mode="json"))
        return TrainingData(
            config_hash=config_hash,
            identifier=upload.identifier,
            dataset_id=upload.dataset_id,
            train=splits["train"],
            validation=splits["validation"],
            test=splits["test"],
            metadata=meta,
            time_column=metadata.time_column,
            feature_columns=metadata.feature_columns,
            target_columns=metadata.target_columns,
            frequency=metadata.frequency,
            force=upload.force,
            uploaded_at=upload.created_at,
        )

    def _put_parquet(self, uri: str, frame: pd.DataFrame) -> ObjectRef:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return _ref(self.store.put_bytes(uri, buffer.getvalue()), rows=len(frame))


def _ref(stored: StoredObject, rows: int | None = None) -> ObjectRef:
    return ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=rows)


def main() -> None:
    settings = PreprocessSettings()
    run_consumer(
        settings,
        settings.topic_dataset_uploaded,
        DatasetUploaded,
        lambda: Preprocessor(settings, load_pipeline_config(settings.pipeline_config)).handle,
    )


if __name__ == "__main__":
    main()
