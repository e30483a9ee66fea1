"""What every inference route module depends on: the service object the lifespan built (`InferenceDep`), and the
forecast of a request's windows, refused and counted the same way for /predict and the Open Inference Protocol.

Route modules (`api`, `oip`) import these from here, never from one another."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from prometheus_client import Counter

from flts.batching import Overloaded, TimedOut, TooLarge
from flts.predict import Forecasts, RequestError, ServingModel, Window
from inference_container.inference import Inference, Job, ModelFailed

log = logging.getLogger(__name__)

PREDICTIONS = Counter(
    "flts_predictions_total",
    "Forecast requests by outcome: ok, rejected (422), overloaded (429: queue full), timed_out (504), "
    "too_large (413: the body is over inference.max_request_bytes, or its windows x steps over "
    "inference.max_batch_work), model_failed (503: the champion raised while forecasting).",
    ["outcome"],
)


def get_inference(request: Request) -> Inference:
    """The service object the lifespan built."""
    return request.app.state.inference


InferenceDep = Annotated[Inference, Depends(get_inference)]


def refuse(status: int, outcome: str, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    PREDICTIONS.labels(outcome).inc()
    log.info("predict refused", extra={"status": status, "reason": message})
    return HTTPException(status, message, headers=headers)


async def forecast(
    inference: Inference, model: ServingModel, windows: list[Window], length: int | None
) -> tuple[Forecasts, int]:
    """The windows' forecasts from one micro-batch (and where this request's start in it); a refusal is an
    HTTPException, counted: 422 for what the model cannot serve, 413 for more work than a batch may hold, 429
    when the queue is full, 504 when too slow, 503 when the champion fails (only its own requests)."""
    try:
        steps = model.check_length(length)
        for position, window in enumerate(windows):
            model.check_horizon(window, steps, f"window {position}: " if position else "")
        return await inference.batcher.submit(Job(model, windows, steps))
    except RequestError as exc:
        raise refuse(422, "rejected", str(exc)) from exc
    except TooLarge as exc:
        cap = inference.limits.max_batch_work
        raise refuse(
            413,
            "too_large",
            f"{len(windows)} windows x {steps} steps is {len(windows) * steps} window-steps; one request may ask "
            f"for at most {cap} (inference.max_batch_work): send fewer windows or ask for fewer steps per request",
        ) from exc
    except ModelFailed as exc:
        raise refuse(503, "model_failed", str(exc), {"Retry-After": "5"}) from exc
    except Overloaded as exc:
        raise refuse(429, "overloaded", f"the model is busy ({exc}); retry shortly", {"Retry-After": "1"}) from exc
    except TimedOut as exc:
        raise refuse(504, "timed_out", f"the forecast took too long ({exc})") from exc
