"""Gateway: upload datasets, browse objects, and follow a lineage through every stage.

An upload is validated before anything is stored (413 / 422 with the exact reason), streamed
to the `datasets` bucket with its sha256, and announced on `dataset-uploaded`. The answer
carries the lineage's config_hash, computed from the same pipeline config preprocess reads.
"""

import logging
import re
import time
import uuid
from typing import Annotated, Any

import pandas as pd
import uvicorn
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from prometheus_client import Counter, make_asgi_app
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flts import auth
from flts.auth import Caller, require_admin, require_identifier
from flts.config import GatewaySettings, PipelineConfig, compute_config_hash, load_pipeline_config
from flts.data.io import DataError, read_measurements, validate_measurements
from flts.evaluate import decide
from flts.kafka import MessageProducer
from flts.layout import CLAIM_FILE, champion_pointer_uri, decision_uri, inference_log_uri, processed_prefix
from flts.messages import DatasetUploaded, InferenceData, Measurement, ObjectRef
from flts.observability import configure_logging, log_context
from flts.storage import ObjectNotFound, ObjectStore, ObjectTooLarge
from flts.tracking import Tracker
from flts.web import BodySizeLimit

log = logging.getLogger(__name__)

UPLOADS = Counter("flts_gateway_uploads_total", "Dataset uploads by outcome.", ["outcome"])
MEASUREMENTS = Counter("flts_gateway_measurements_total", "Rows published on the measurements topic.")
SCORING_CLAIMS = Counter("flts_gateway_scoring_claims_total", "Files of rows accepted for batch scoring.")
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_HASH = re.compile(r"^[0-9a-f]{64}$")
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class MeasurementRows(BaseModel):
    """`POST /measurements` as JSON: rows of one series, each {time column: ISO-8601, column: number or null}."""

    model_config = ConfigDict(extra="forbid")
    identifier: str | None = None
    rows: list[dict[str, str | float | int | None]] = Field(min_length=1)


class Gateway:
    """What the routes need, built once: the store, the producer, the tracker and the pipeline config."""

    def __init__(self, settings: GatewaySettings, config: PipelineConfig) -> None:
        self.settings = settings
        self.config = config
        self.store = ObjectStore(settings)
        self.producer = MessageProducer(settings)
        self._tracker: Tracker | None = None

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.settings)
        return self._tracker

    def parsed(self, upload: UploadFile, role: str) -> pd.DataFrame:
        """Parse the upload from its spooled file, or answer 413 / 422 with the exact reason."""
        if upload.size is not None and upload.size > self.settings.max_upload_bytes:
            raise HTTPException(
                413, f"{role} file is {upload.size} bytes; the limit is {self.settings.max_upload_bytes}"
            )
        upload.file.seek(0)
        try:
            return read_measurements(upload.file, self.config.data, self.config.limits)
        except DataError as exc:
            raise HTTPException(422, f"{role} file {upload.filename!r}: {exc}") from exc

    def measurements(self, body: bytes, content_type: str, identifier: str | None) -> list[Measurement]:
        """A body of rows (CSV, or JSON {"identifier", "rows": [{column: cell}]}) checked as an upload is."""
        if content_type.startswith("text/csv"):
            data = body
        elif content_type.startswith("application/json"):
            try:
                sent = MeasurementRows.model_validate_json(body)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in first["loc"]) or "body"
                raise HTTPException(422, f"{where}: {first['msg']}") from exc
            identifier = identifier or sent.identifier
            data = pd.DataFrame(sent.rows).to_csv(index=False).encode()
        else:
            raise HTTPException(415, f"send rows as text/csv or application/json, not {content_type or 'nothing'}")
        try:
            frame = read_measurements(data, self.config.data, self.config.limits)
        except DataError as exc:
            raise HTTPException(422, f"rows: {exc}") from exc
        identifier = self.resolved_identifier(identifier, frame)
        time_column = self.config.data.time_column
        columns = [c for c in frame.columns if c not in (time_column, self.config.data.identifier_column)]
        cells = frame[columns].astype(object).where(frame[columns].notna(), None)
        return [
            Measurement(identifier=identifier, ts=ts, values=dict(zip(columns, row, strict=True)))
            for ts, row in zip(frame[time_column], cells.itertuples(index=False, name=None), strict=True)
        ]

    def validated(self, train: UploadFile, test: UploadFile | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        train_frame = self.parsed(train, "train")
        test_frame = self.parsed(test, "test") if test is not None else None
        try:
            validate_measurements(train_frame, self.config, test_frame)
        except DataError as exc:
            raise HTTPException(422, str(exc)) from exc
        return train_frame, test_frame

    def json_if_exists(self, uri: str) -> dict[str, Any] | None:
        return self.store.get_json(uri) if self.store.exists(uri) else None

    def identifier_in(self, frame: pd.DataFrame) -> str | None:
        """The series a file names in its identifier column (422 when it names several)."""
        column = self.config.data.identifier_column
        if column and column in frame.columns:
            values = frame[column].dropna().astype(str).unique()
            if len(values) > 1:
                raise HTTPException(
                    422, f"the file holds {len(values)} series in column {column!r}; send one series per file"
                )
            return str(values[0]) if len(values) else None
        return None

    def resolved_identifier(self, given: str | None, frame: pd.DataFrame) -> str:
        identifier = given or self.identifier_in(frame) or "global"
        if not IDENTIFIER.match(identifier):
            raise HTTPException(422, f"identifier {identifier!r} must match {IDENTIFIER.pattern}")
        return identifier

    def store_upload(self, upload: UploadFile, key: str, rows: int) -> ObjectRef:
        upload.file.seek(0)
        uri = f"s3://{self.settings.bucket_datasets}/{key}"
        try:
            stored = self.store.put_stream(uri, upload.file, max_bytes=self.settings.max_upload_bytes)
        except ObjectTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        return ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=rows)


def create_app(settings: GatewaySettings) -> FastAPI:
    app = FastAPI(
        title="FLTS gateway",
        version="0.1.0",
        description="Upload measurements, follow the pipeline, download its objects.",
    )
    app.mount("/metrics", make_asgi_app())
    # The whole request (train + test files and the multipart framing) is bounded while it streams in.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        on_refused=UPLOADS.labels("too_large").inc,
    )
    auth.install(app, settings)  # outermost: an anonymous body is refused before it is counted
    state: dict[str, Gateway] = {}

    def gateway() -> Gateway:
        if "gateway" not in state:
            state["gateway"] = Gateway(settings, load_pipeline_config(settings.pipeline_config))
        return state["gateway"]

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    def readyz(gw: Annotated[Gateway, Depends(gateway)]) -> dict[str, str]:
        try:
            gw.store.client.head_bucket(Bucket=settings.bucket_datasets)
        except Exception as exc:
            raise HTTPException(503, f"object store not reachable: {exc}", headers={"Retry-After": "5"}) from exc
        return {"status": "ready"}

    @app.post("/datasets", status_code=202, tags=["datasets"])
    def upload_dataset(
        principal: Caller,
        gw: Annotated[Gateway, Depends(gateway)],
        train: Annotated[UploadFile, File(description="CSV of measurements: a time column and numeric columns.")],
        test: Annotated[UploadFile | None, File(description="Optional CSV used as the test set.")] = None,
        identifier: Annotated[str | None, Query(description="The series this data belongs to.")] = None,
        force: Annotated[bool, Query(description="Process and train again even if this lineage exists.")] = False,
    ) -> dict[str, Any]:
        if force:
            require_admin(principal, "force a retrain")
        if identifier is not None:
            require_identifier(principal, identifier)  # before the CSV is parsed
        train_frame, test_frame = gw.validated(train, test)
        identifier = gw.resolved_identifier(identifier, train_frame)
        require_identifier(principal, identifier)
        dataset_id = uuid.uuid4().hex[:16]
        with log_context(dataset_id=dataset_id, identifier=identifier):
            prefix = f"{identifier}/{dataset_id}"
            train_ref = gw.store_upload(train, f"{prefix}/train.csv", len(train_frame))
            test_ref = None
            if test is not None and test_frame is not None:
                test_ref = gw.store_upload(test, f"{prefix}/test.csv", len(test_frame))
            hashes = [train_ref.sha256] + ([test_ref.sha256] if test_ref else [])
            config_hash = compute_config_hash(gw.config, identifier, *hashes)
            message = DatasetUploaded(
                dataset_id=dataset_id,
                identifier=identifier,
                train=train_ref,
                test=test_ref,
                filename=train.filename or "train.csv",
                columns=list(train_frame.columns),
                force=force,
            )
            gw.producer.publish(settings.topic_dataset_uploaded, message)
            UPLOADS.labels("accepted").inc()
            log.info("dataset uploaded", extra={"config_hash": config_hash, "rows": len(train_frame)})
        return {
            "dataset_id": dataset_id,
            "identifier": identifier,
            "config_hash": config_hash,
            "train": train_ref.model_dump(),
            "test": test_ref.model_dump() if test_ref else None,
            "status_url": f"/runs/{config_hash}?identifier={identifier}",
        }

    @app.post("/score", status_code=202, tags=["scoring"])
    def score_rows(
        principal: Caller,
        gw: Annotated[Gateway, Depends(gateway)],
        rows: Annotated[UploadFile, File(description="CSV of measurements: a time column and the model's columns.")],
        identifier: Annotated[str | None, Query(description="Whose champion scores the rows.")] = None,
    ) -> dict[str, Any]:
        """Forecast every window of a file of rows with the identifier's champion, in the background.

        The file is checked as an upload is, stored, and claimed on `inference-data`; an inference replica
        writes the forecasts (and the errors, where the file holds the actual values) to `result_uri` once
        and announces them on `inference-scored`. Rows it cannot score go to the dead-letter topic.
        """
        if identifier is not None:
            require_identifier(principal, identifier)  # before the CSV is parsed
        frame = gw.parsed(rows, "rows")
        identifier = gw.resolved_identifier(identifier, frame)
        require_identifier(principal, identifier)
        claim_id = uuid.uuid4().hex[:16]
        with log_context(claim_id=claim_id, identifier=identifier):
            data = gw.store_upload(rows, f"{identifier}/scoring/{claim_id}.csv", len(frame))
            claim = InferenceData(identifier=identifier, claim_id=claim_id, dataset_id=claim_id, rows="raw", data=data)
            gw.producer.publish(settings.topic_inference_data, claim)
            SCORING_CLAIMS.inc()
            log.info("rows sent for scoring", extra={"rows": len(frame)})
        return {
            "claim_id": claim_id,
            "identifier": identifier,
            "rows": len(frame),
            "data": data.model_dump(),
            "result_uri": inference_log_uri(settings, identifier, claim.created_at, claim_id),
            "completion_topic": settings.topic_inference_scored,
        }

    @app.post(
        "/measurements",
        status_code=202,
        tags=["measurements"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": MeasurementRows.model_json_schema()},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def post_measurements(
        request: Request,
        principal: Caller,
        gw: Annotated[Gateway, Depends(gateway)],
        identifier: Annotated[str | None, Query(description="The series the rows belong to.")] = None,
    ) -> dict[str, Any]:
        """New rows of a series, published on the measurements topic (one message per row, keyed by identifier):
        the inference service forecasts from each one as it lands and publishes the forecast on `forecasts`."""
        if identifier is not None:
            require_identifier(principal, identifier)  # before the body is parsed
        body = await request.body()
        rows = await run_in_threadpool(gw.measurements, body, request.headers.get("content-type", ""), identifier)
        require_identifier(principal, rows[0].identifier)
        await run_in_threadpool(gw.producer.publish_many, settings.topic_measurements, rows)
        MEASUREMENTS.inc(len(rows))
        return {"identifier": rows[0].identifier, "rows": len(rows), "topic": settings.topic_measurements}

    @app.get("/datasets", tags=["datasets"])
    def list_datasets(
        principal: Caller,
        gw: Annotated[Gateway, Depends(gateway)],
        identifier: Annotated[str, Query(description="Whose uploads to list.")] = "global",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[str, Query(description="The `next` of the previous page.")] = "",
    ) -> dict[str, Any]:
        """One identifier's uploads, a page at a time (never every tenant's at once)."""
        require_identifier(principal, identifier)
        if not IDENTIFIER.match(identifier):
            raise HTTPException(422, f"identifier {identifier!r} must match {IDENTIFIER.pattern}")
        objects, next_after = gw.store.page(settings.bucket_datasets, f"{identifier}/", limit, after)
        items = [
            {"key": o["Key"], "size_bytes": o["Size"], "last_modified": o["LastModified"].isoformat()} for o in objects
        ]
        return {"identifier": identifier, "items": items, "next": next_after}

    @app.get("/lineages", tags=["runs"])
    def list_lineages(
        principal: Caller,
        gw: Annotated[Gateway, Depends(gateway)],
        identifier: Annotated[str, Query(description="Whose lineages to list.")] = "global",
    ) -> dict[str, Any]:
        """An identifier's preprocessed lineages, newest first, each with eval's recorded outcome."""
        require_identifier(principal, identifier)
        if not IDENTIFIER.match(identifier):
            raise HTTPException(422, f"identifier {identifier!r} must match {IDENTIFIER.pattern}")
        objects = gw.store.list(settings.bucket_processed, f"{identifier}/")
        claims = sorted((o for o in objects if o["Key"].endswith(f"/{CLAIM_FILE}")), key=lambda o: o["LastModified"])
        lineages = []
        for claim in reversed(claims):
            config_hash = claim["Key"].split("/")[1]
            recorded = gw.json_if_exists(decision_uri(settings, identifier, config_hash)) or {}
            lineages.append(
                {
                    "config_hash": config_hash,
                    "preprocessed_at": claim["LastModified"].isoformat(),
                    "outcome": recorded.get("outcome"),
                    "reason": recorded.get("reason"),
                }
            )
        return {"identifier": identifier, "lineages": lineages}

    @app.get("/objects/{bucket}/{key:path}", tags=["objects"])
    def download(
        bucket: str, key: str, principal: Caller, gw: Annotated[Gateway, Depends(gateway)]
    ) -> StreamingResponse:
        if bucket != settings.bucket_datasets:
            # Model weights, processed data and promotion pointers are the pipeline's, not the uploader's.
            raise HTTPException(404, f"only uploads are served here (bucket {settings.bucket_datasets!r})")
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise HTTPException(400, f"invalid object key {key!r}")
        require_identifier(principal, parts[0])  # uploads are stored under <identifier>/
        uri = f"s3://{bucket}/{key}"
        if not gw.store.exists(uri):
            raise HTTPException(404, f"no object {uri}")
        try:
            chunks = gw.store.iter_chunks(uri)
        except ObjectNotFound as exc:
            raise HTTPException(404, f"no object {uri}") from exc
        filename = parts[-1].replace('"', "")
        return StreamingResponse(
            chunks,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.get("/runs/{config_hash}", tags=["runs"])
    def run_status(
        config_hash: str,
        principal: Caller,
        gw: Annotated[Gateway, Depends(gateway)],
        identifier: Annotated[str, Query()] = "global",
    ) -> dict[str, Any]:
        require_identifier(principal, identifier)
        if not CONFIG_HASH.match(config_hash):
            raise HTTPException(422, "config_hash must be 64 lowercase hex characters")
        return lineage_status(gw, config_hash, identifier)

    return app


def lineage_status(gw: Gateway, config_hash: str, identifier: str) -> dict[str, Any]:
    """Every stage of a lineage: preprocessing, each model's training, the leaderboard, the champion."""
    settings = gw.settings
    metadata_uri = f"{processed_prefix(settings, identifier, config_hash)}/metadata.json"
    preprocessed = None
    if (metadata := gw.json_if_exists(metadata_uri)) is not None:
        preprocessed = {
            "rows": metadata.get("rows"),
            "feature_columns": metadata.get("feature_columns"),
            "target_columns": metadata.get("target_columns"),
            "frequency": metadata.get("frequency"),
            "sampling": metadata.get("config", {}).get("preprocessing", {}).get("sample"),
            "metadata_uri": metadata_uri,
        }
    # Only this identifier's runs: a config_hash of another tenant shows nothing of theirs.
    runs = [r for r in gw.tracker.lineage_runs(config_hash) if r.identifier == identifier]
    decision = decide(runs, gw.config.evaluation, int(time.time() * 1000))
    champion = gw.json_if_exists(champion_pointer_uri(settings, identifier, config_hash))
    recorded = gw.json_if_exists(decision_uri(settings, identifier, config_hash))
    if preprocessed is None and not runs:
        raise HTTPException(404, f"no lineage {config_hash} for identifier {identifier!r} (yet)")
    return {
        "config_hash": config_hash,
        "identifier": identifier,
        "preprocessed": preprocessed,
        "training": [
            {
                "model_type": r.model_type,
                "run_id": r.run_id,
                "status": r.status,
                "error": r.error,
                "started_at_ms": r.start_time_ms,
                "seconds": round((r.end_time_ms - r.start_time_ms) / 1000, 1) if r.end_time_ms else None,
                "metrics": {k: v for k, v in r.metrics.items() if k.startswith("test_") and "__" not in k},
                # The latest epoch a network has logged while it trains (MLflow metrics, step = epoch).
                "progress": {k: r.metrics[k] for k in ("epoch", "train_loss", "val_loss") if k in r.metrics},
            }
            for r in runs
        ],
        # outcome (eval's record): promoted, superseded (a lineage uploaded later holds the champion), no_winner.
        "decision": {"ready": decision.ready, "reason": decision.reason, "outcome": (recorded or {}).get("outcome")},
        "leaderboard": [
            {"model_type": c.model_type, "run_id": c.run_id, "score": c.score} for c in decision.leaderboard
        ],
        "champion": champion,
    }


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
