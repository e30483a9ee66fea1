"""Gateway: upload datasets, browse objects, and follow a lineage through every stage.

An upload is validated before anything is stored (413 / 422 with the exact reason), streamed
to the `datasets` bucket with its sha256, and announced on `dataset-uploaded`. The answer
carries the lineage's config_hash, computed from the same pipeline config preprocess reads.
Rows sent for forecasting go to Kafka the same way: a file to score in the background (`POST /score`, claimed on
`inference-data`) or live rows (`POST /measurements`, on `measurements`). The routes are in `api.py`, the status
page and the forecast-vs-actual data in `ui.py`, what a tenant reads back (its scored claims, its live forecasts)
in `results.py`, what they work with in `gateway.py`.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flts import auth
from flts.config import load_pipeline_config
from flts.kafka import DeliveryTimeout
from flts.observability import configure_logging
from flts.settings import GatewaySettings
from flts.web import BodySizeLimit, service_app
from gateway_container.api import MEASUREMENT_REFUSALS, UPLOADS, router
from gateway_container.gateway import Gateway
from gateway_container.results import router as results_router
from gateway_container.ui import router as ui_router

MULTIPART_OVERHEAD_BYTES = 64 * 1024

log = logging.getLogger(__name__)


async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A message Kafka did not acknowledge (the broker down or unreachable): a 503 to retry, never a 500."""
    log.warning("Kafka did not acknowledge a message", extra={"path": request.url.path, "error": repr(exc)})
    detail = "the message broker did not acknowledge the request's messages; nothing is lost on retry, try again"
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": "5"})


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = Gateway(settings, load_pipeline_config(settings.pipeline_config))
        yield

    app = service_app(
        "FLTS gateway", "Upload measurements, follow the pipeline, download its objects.", lifespan, router
    )
    app.include_router(ui_router)
    app.include_router(results_router)
    for unacknowledged in (KafkaException, DeliveryTimeout):  # flts.kafka.MessageProducer's two ways of failing
        app.add_exception_handler(unacknowledged, broker_unavailable)
    # The whole request (train + test files and the multipart framing) is bounded while it streams in.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        on_refused=UPLOADS.labels("too_large").inc,
    )
    # Live rows get a far smaller limit of their own (outside the app-wide one, so it is the one that answers).
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.measurements_max_bytes,
        on_refused=MEASUREMENT_REFUSALS.labels("too_large").inc,
        path="/measurements",
    )
    auth.install(app, settings)  # outermost: an anonymous body is refused before it is counted
    return app


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
