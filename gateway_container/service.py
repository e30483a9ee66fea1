"""Gateway: upload datasets, browse objects, and follow a lineage through every stage.

An upload is validated before anything is stored (413 / 422 with the exact reason), streamed
to the `datasets` bucket with its sha256, and announced on `dataset-uploaded`. The answer
carries the lineage's config_hash, computed from the same pipeline config preprocess reads.
"""

import logging
import uuid
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from prometheus_client import Counter, make_asgi_app

from flts import auth
from flts.auth import Caller, require_admin, require_identifier
from flts.config import GatewaySettings, compute_config_hash
from flts.layout import inference_log_uri
from flts.messages import DatasetUploaded, InferenceData
from flts.observability import configure_logging, log_context
from flts.storage import ObjectNotFound
from flts.web import BodySizeLimit
from gateway_container.gateway import CONFIG_HASH, IDENTIFIER, GatewayDep, MeasurementRows
from gateway_container.ui import router as ui_router

log = logging.getLogger(__name__)

UPLOADS = Counter("flts_gateway_uploads_total", "Dataset uploads by outcome.", ["outcome"])
MEASUREMENTS = Counter("flts_gateway_measurements_total", "Rows published on the measurements topic.")
SCORING_CLAIMS = Counter("flts_gateway_scoring_claims_total", "Files of rows accepted for batch scoring.")
MULTIPART_OVERHEAD_BYTES = 64 * 1024


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
    app.state.settings = settings

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    def readyz(gw: GatewayDep) -> dict[str, str]:
        try:
            gw.store.client.head_bucket(Bucket=settings.bucket_datasets)
        except Exception as exc:
            raise HTTPException(503, f"object store not reachable: {exc}", headers={"Retry-After": "5"}) from exc
        return {"status": "ready"}

    @app.post("/datasets", status_code=202, tags=["datasets"])
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
        gw: GatewayDep,
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
        gw: GatewayDep,
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
        gw: GatewayDep,
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
        gw: GatewayDep,
        identifier: Annotated[str, Query(description="Whose lineages to list.")] = "global",
    ) -> dict[str, Any]:
        """An identifier's preprocessed lineages, newest first, each with eval's recorded outcome."""
        require_identifier(principal, identifier)
        if not IDENTIFIER.match(identifier):
            raise HTTPException(422, f"identifier {identifier!r} must match {IDENTIFIER.pattern}")
        return {"identifier": identifier, "lineages": gw.lineages(identifier)}

    @app.get("/objects/{bucket}/{key:path}", tags=["objects"])
    def download(bucket: str, key: str, principal: Caller, gw: GatewayDep) -> StreamingResponse:
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
        gw: GatewayDep,
        identifier: Annotated[str, Query()] = "global",
    ) -> dict[str, Any]:
        require_identifier(principal, identifier)
        if not CONFIG_HASH.match(config_hash):
            raise HTTPException(422, "config_hash must be 64 lowercase hex characters")
        return gw.lineage_status(config_hash, identifier)

    app.include_router(ui_router)
    return app


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
