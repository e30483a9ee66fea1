"""The gateway's routes and their dependency: upload datasets, send rows to forecast, browse uploads, follow a
lineage. The status page's routes are in `ui.py`."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from prometheus_client import Counter

from flts.auth import Caller, require_admin, require_identifier
from flts.layout import identifier_prefix, inference_log_uri, lineage_config_hash, scoring_upload_key, upload_key
from flts.messages import DatasetUploaded, InferenceData
from flts.observability import log_context
from flts.records import Lineages, LineageStatus
from flts.web import ProbeStatus
from gateway_container import downloads
from gateway_container.deps import GatewayDep
from gateway_container.gateway import Gateway, MeasurementRows, checked_config_hash, checked_identifier
from gateway_container.measurements import retry_after
from gateway_container.models import DatasetAccepted, MeasurementsAccepted, ScoringClaim, StoredObject, Uploads

log = logging.getLogger(__name__)

UPLOADS = Counter("flts_gateway_uploads_total", "Dataset uploads by outcome.", ["outcome"])
MEASUREMENTS = Counter("flts_gateway_measurements_total", "Rows published on the measurements topic.")
MEASUREMENT_REFUSALS = Counter(
    "flts_gateway_measurement_refusals_total",
    "POST /measurements requests refused: body over its limit, rows over the cap, the principal's rate.",
    ["reason"],
)
SCORING_CLAIMS = Counter("flts_gateway_scoring_claims_total", "Files of rows accepted for batch scoring.")


router = APIRouter()

# The download routes stream the object's bytes as stored: no JSON model describes them.
OBJECT_BYTES = {200: {"description": "The object's bytes, as stored.", "content": {"application/octet-stream": {}}}}


@router.get("/readyz", tags=["probes"])
def readyz(gw: GatewayDep) -> ProbeStatus:
    try:
        gw.check_store()
    except Exception as exc:
        # A public probe: the reason (it names the store's endpoint) goes to the log, the answer says only what.
        log.warning("not ready: the object store does not answer", exc_info=True)
        raise HTTPException(503, "object store not reachable", headers={"Retry-After": "5"}) from exc
    return ProbeStatus(status="ready")


@router.post("/datasets", status_code=202, tags=["datasets"])
def upload_dataset(
    principal: Caller,
    gw: GatewayDep,
    train: Annotated[UploadFile, File(description="CSV of measurements: a time column and numeric columns.")],
    test: Annotated[UploadFile | None, File(description="Optional CSV used as the test set.")] = None,
    identifier: Annotated[str | None, Query(description="The series this data belongs to.")] = None,
    force: Annotated[bool, Query(description="Process and train again even if this lineage exists.")] = False,
) -> DatasetAccepted:
    if force:
        require_admin(principal, "force a retrain")
    if identifier is not None:
        require_identifier(principal, identifier)  # before the CSV is parsed
    train_frame, test_frame = gw.validated(train, test)
    identifier = gw.resolved_identifier(identifier, train_frame)
    require_identifier(principal, identifier)
    dataset_id = uuid.uuid4().hex[:16]
    with log_context(dataset_id=dataset_id, identifier=identifier):
        train_ref = gw.store_upload(train, upload_key(identifier, dataset_id, "train"), len(train_frame))
        test_ref = None
        if test is not None and test_frame is not None:
            test_ref = gw.store_upload(test, upload_key(identifier, dataset_id, "test"), len(test_frame))
        test_sha256 = test_ref.sha256 if test_ref else None
        config_hash = lineage_config_hash(gw.config, identifier, train_ref.sha256, test_sha256)
        message = DatasetUploaded(
            dataset_id=dataset_id,
            identifier=identifier,
            train=train_ref,
            test=test_ref,
            filename=train.filename or "train.csv",
            columns=list(train_frame.columns),
            force=force,
        )
        gw.producer.publish(gw.settings.topic_dataset_uploaded, message)
        UPLOADS.labels("accepted").inc()
        log.info("dataset uploaded", extra={"config_hash": config_hash, "rows": len(train_frame)})
    return DatasetAccepted(
        dataset_id=dataset_id,
        identifier=identifier,
        config_hash=config_hash,
        train=train_ref.model_dump(),
        test=test_ref.model_dump() if test_ref else None,
        status_url=f"/runs/{config_hash}?identifier={identifier}",
    )


@router.post("/score", status_code=202, tags=["scoring"])
def score_rows(
    principal: Caller,
    gw: GatewayDep,
    rows: Annotated[UploadFile, File(description="CSV of measurements: a time column and the model's columns.")],
    identifier: Annotated[str | None, Query(description="Whose champion scores the rows.")] = None,
) -> ScoringClaim:
    """Forecast every window of a file of rows with the identifier's champion, in the background.

    The file is checked as an upload is, stored, and claimed on `inference-data`; an inference replica
    writes the forecasts (and the errors, where the file holds the actual values) to `result_uri` once
    and announces them on `inference-scored` (`GET /score/{claim_id}` reads them back). Rows it cannot score go to
    the dead-letter topic. A file holds at most SCORE_MAX_ROWS rows (413): what one replica holds while it scores.
    """
    if identifier is not None:
        require_identifier(principal, identifier)  # before the CSV is parsed
    frame = gw.parsed(rows, "rows", max_rows=(gw.settings.score_max_rows, "SCORE_MAX_ROWS"))
    identifier = gw.resolved_identifier(identifier, frame)
    require_identifier(principal, identifier)
    claim_id = uuid.uuid4().hex[:16]
    with log_context(claim_id=claim_id, identifier=identifier):
        data = gw.store_upload(rows, scoring_upload_key(identifier, claim_id), len(frame))
        claim = InferenceData(identifier=identifier, claim_id=claim_id, dataset_id=claim_id, rows="raw", data=data)
        gw.producer.publish(gw.settings.topic_inference_data, claim)
        SCORING_CLAIMS.inc()
        log.info("rows sent for scoring", extra={"rows": len(frame)})
    return ScoringClaim(
        claim_id=claim_id,
        identifier=identifier,
        rows=len(frame),
        data=data.model_dump(),
        result_uri=inference_log_uri(gw.settings, identifier, claim.created_at, claim_id),
        completion_topic=gw.settings.topic_inference_scored,
    )


@router.post(
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
    gw: GatewayDep,
    identifier: Annotated[str | None, Query(description="The series the rows belong to.")] = None,
) -> MeasurementsAccepted:
    """New rows of a series, published on the measurements topic (one message per row, keyed by identifier):
    the inference service forecasts from each one as it lands and publishes the forecast on `forecasts`.

    Bounded per request (MEASUREMENTS_MAX_BYTES, MEASUREMENTS_MAX_ROWS: 413 while the body streams in) and per
    principal (a token bucket of rows: 429 with Retry-After); a refused request publishes nothing."""
    if identifier is not None:
        require_identifier(principal, identifier)  # before the body is parsed
    reader = gw.measurement_reader(request.headers.get("content-type", ""))
    _within_row_rate(gw, principal.name, 1, check_only=True)  # an empty bucket: refused before the body is read
    try:
        async for chunk in request.stream():
            await run_in_threadpool(reader.feed, chunk)
        rows = await run_in_threadpool(gw.measurements_of, reader, identifier)
    except HTTPException as exc:
        if exc.status_code == 413:  # over the body limit is refused (and counted) by BodySizeLimit instead
            MEASUREMENT_REFUSALS.labels("too_many_rows").inc()
        raise
    require_identifier(principal, rows[0].identifier)
    _within_row_rate(gw, principal.name, len(rows))
    await run_in_threadpool(gw.producer.publish_many, gw.settings.topic_measurements, rows)
    MEASUREMENTS.inc(len(rows))
    return MeasurementsAccepted(identifier=rows[0].identifier, rows=len(rows), topic=gw.settings.topic_measurements)


def _within_row_rate(gw: Gateway, principal: str, rows: int, check_only: bool = False) -> None:
    """Take ``rows`` from the principal's bucket of rows, or answer 429 with when to come back."""
    wait = gw.row_buckets.take(principal, rows, check_only=check_only)
    if wait > 0:
        MEASUREMENT_REFUSALS.labels("rate_limited").inc()
        settings = gw.settings
        raise HTTPException(
            429,
            f"{principal!r} sends more rows than its {settings.measurements_rows_per_second:g} a second (up to "
            f"{settings.measurements_burst_rows} at once): try again in {wait:.1f} s; nothing was published",
            headers={"Retry-After": retry_after(wait)},
        )


@router.get("/datasets", tags=["datasets"])
def list_datasets(
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[str, Query(description="Whose uploads to list.")] = "global",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str, Query(description="The `next` of the previous page.")] = "",
) -> Uploads:
    """One identifier's uploads, a page at a time (never every tenant's at once)."""
    require_identifier(principal, identifier)
    checked_identifier(identifier)
    objects, next_after = gw.store.page(gw.settings.bucket_datasets, identifier_prefix(identifier), limit, after)
    items = [
        StoredObject(key=o["Key"], size_bytes=o["Size"], last_modified=o["LastModified"].isoformat()) for o in objects
    ]
    return Uploads(identifier=identifier, items=items, next=next_after)


@router.get("/lineages", tags=["runs"])
def list_lineages(
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[str, Query(description="Whose lineages to list.")] = "global",
) -> Lineages:
    """An identifier's preprocessed lineages, newest first, each with eval's recorded outcome."""
    require_identifier(principal, identifier)
    checked_identifier(identifier)
    return Lineages(identifier=identifier, lineages=gw.lineages(identifier))


@router.get("/objects/{bucket}/{key:path}", tags=["objects"], response_class=StreamingResponse, responses=OBJECT_BYTES)
def download(bucket: str, key: str, principal: Caller, gw: GatewayDep) -> StreamingResponse:
    """An upload (`datasets/<identifier>/...`). `GET /download/...` serves processed splits too."""
    if bucket != gw.settings.bucket_datasets:
        # Model weights, processed data and promotion pointers are the pipeline's, not the uploader's.
        raise HTTPException(404, f"only uploads are served here (bucket {gw.settings.bucket_datasets!r})")
    return downloads.download(gw, principal, bucket, key)


@router.get("/download/{bucket}/{key:path}", tags=["objects"], response_class=StreamingResponse, responses=OBJECT_BYTES)
def download_scoped(
    bucket: str,
    key: str,
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[
        str | None, Query(description="Whose newest lineage an earlier flat name reads; global when absent.")
    ] = None,
) -> StreamingResponse:
    """What a caller may read of its identifiers: uploads (`datasets/<identifier>/...`), processed splits
    (`processed-data/<identifier>/<config_hash>/{train,validation,test}.parquet`) and the earlier system's flat
    names (`processed-data/test_processed_data.parquet`, ...: that split of the newest lineage). Never model
    weights or promotion pointers."""
    return downloads.download(gw, principal, bucket, key, identifier)


@router.get("/runs/{config_hash}", tags=["runs"], response_model_exclude_unset=True)
def run_status(
    config_hash: str,
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[str, Query()] = "global",
) -> LineageStatus:
    """Every stage of a lineage; its champion as eval recorded it (with exactly the keys the record has)."""
    require_identifier(principal, identifier)
    return gw.lineage_status(checked_config_hash(config_hash), checked_identifier(identifier))
