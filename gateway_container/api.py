"""The gateway's routes and their dependency: upload datasets, browse uploads, follow a lineage."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from prometheus_client import Counter

from flts.auth import Caller, require_admin, require_identifier
from flts.layout import (
    CLAIM_FILE,
    config_hash_of_claim,
    decision_uri,
    identifier_prefix,
    lineage_config_hash,
    upload_key,
)
from flts.messages import DatasetUploaded
from flts.observability import log_context
from flts.storage import ObjectNotFound
from gateway_container.gateway import Gateway

log = logging.getLogger(__name__)

UPLOADS = Counter("flts_gateway_uploads_total", "Dataset uploads by outcome.", ["outcome"])
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_HASH = re.compile(r"^[0-9a-f]{64}$")


def get_gateway(request: Request) -> Gateway:
    """The service object the lifespan built."""
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]

router = APIRouter()


def _checked_identifier(identifier: str) -> str:
    if not IDENTIFIER.match(identifier):
        raise HTTPException(422, f"identifier {identifier!r} must match {IDENTIFIER.pattern}")
    return identifier


@router.get("/readyz", tags=["probes"])
def readyz(gw: GatewayDep) -> dict[str, str]:
    try:
        gw.check_store()
    except Exception as exc:
        raise HTTPException(503, f"object store not reachable: {exc}", headers={"Retry-After": "5"}) from exc
    return {"status": "ready"}


@router.post("/datasets", status_code=202, tags=["datasets"])
def upload_dataset(
    principal: Caller,
    gw: GatewayDep,
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
    identifier = _checked_identifier(identifier or gw.identifier_in(train_frame) or "global")
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
    return {
        "dataset_id": dataset_id,
        "identifier": identifier,
        "config_hash": config_hash,
        "train": train_ref.model_dump(),
        "test": test_ref.model_dump() if test_ref else None,
        "status_url": f"/runs/{config_hash}?identifier={identifier}",
    }


@router.get("/datasets", tags=["datasets"])
def list_datasets(
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[str, Query(description="Whose uploads to list.")] = "global",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str, Query(description="The `next` of the previous page.")] = "",
) -> dict[str, Any]:
    """One identifier's uploads, a page at a time (never every tenant's at once)."""
    require_identifier(principal, identifier)
    _checked_identifier(identifier)
    objects, next_after = gw.store.page(gw.settings.bucket_datasets, identifier_prefix(identifier), limit, after)
    items = [
        {"key": o["Key"], "size_bytes": o["Size"], "last_modified": o["LastModified"].isoformat()} for o in objects
    ]
    return {"identifier": identifier, "items": items, "next": next_after}


@router.get("/lineages", tags=["runs"])
def list_lineages(
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[str, Query(description="Whose lineages to list.")] = "global",
) -> dict[str, Any]:
    """An identifier's preprocessed lineages, newest first, each with eval's recorded outcome."""
    require_identifier(principal, identifier)
    _checked_identifier(identifier)
    objects = gw.store.list(gw.settings.bucket_processed, identifier_prefix(identifier))
    claims = sorted((o for o in objects if o["Key"].endswith(f"/{CLAIM_FILE}")), key=lambda o: o["LastModified"])
    lineages = []
    for claim in reversed(claims):
        config_hash = config_hash_of_claim(claim["Key"])
        recorded = gw.json_if_exists(decision_uri(gw.settings, identifier, config_hash)) or {}
        lineages.append(
            {
                "config_hash": config_hash,
                "preprocessed_at": claim["LastModified"].isoformat(),
                "outcome": recorded.get("outcome"),
                "reason": recorded.get("reason"),
            }
        )
    return {"identifier": identifier, "lineages": lineages}


@router.get("/objects/{bucket}/{key:path}", tags=["objects"])
def download(bucket: str, key: str, principal: Caller, gw: GatewayDep) -> StreamingResponse:
    if bucket != gw.settings.bucket_datasets:
        # Model weights, processed data and promotion pointers are the pipeline's, not the uploader's.
        raise HTTPException(404, f"only uploads are served here (bucket {gw.settings.bucket_datasets!r})")
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise HTTPException(400, f"invalid object key {key!r}")
    require_identifier(principal, parts[0])  # uploads are stored under <identifier>/ (layout.upload_key)
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


@router.get("/runs/{config_hash}", tags=["runs"])
def run_status(
    config_hash: str,
    principal: Caller,
    gw: GatewayDep,
    identifier: Annotated[str, Query()] = "global",
) -> dict[str, Any]:
    require_identifier(principal, identifier)
    if not CONFIG_HASH.match(config_hash):
        raise HTTPException(422, "config_hash must be 64 lowercase hex characters")
    return gw.lineage_status(config_hash, identifier)
