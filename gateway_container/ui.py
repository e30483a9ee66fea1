"""The status page (`/ui`) and the forecast-vs-actual data behind it and `flts plot` (`/forecasts`).

Server-rendered Jinja2 pages, no front-end build and nothing fetched from elsewhere: the one script
(static/ui.js, vendored here) re-fetches the live parts of a page (`data-poll`) until they are final.
Pages: the identifiers and their lineages with the dead-letter count (/ui), an identifier's champion,
promotion history and lineages (/ui/identifiers/ID), and a lineage's live stage timeline, leaderboard
and the plot of a model's test forecasts against the actual values, persistence beside it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from flts import backtest
from flts.auth import Caller, KeyRing, Principal, require_identifier
from flts.deadletters import latest_letters
from flts.evaluate import latest_per_model_type, leaderboard
from flts.layout import history_prefix
from flts.plot import forecast_figure
from flts.records import Promotion
from flts.tracking import Tracker
from gateway_container.deps import GatewayDep
from gateway_container.gateway import Gateway, checked_config_hash, checked_identifier
from gateway_container.models import ForecastVsActual, Series

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_FILES = {"ui.js": "text/javascript", "ui.css": "text/css"}
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter()

# The leaderboard's columns: the metric names MLflow holds, per target with `__<target>` after them.
LEADERBOARD_METRICS = ("rmse", "mae", "mse", "smape", "mase", "rmse_original", "mae_original")
HISTORY_SHOWN = 20
LINEAGES_SHOWN = 10  # per identifier on the index
# Where the login page keeps the API key in the browser (read-only pages: no state changes to forge).
KEY_COOKIE = "flts_api_key"
BASELINE = "PERSISTENCE"
# Times a plot shows unless asked otherwise (the latest): a day of a 2-minute grid.
DEFAULT_POINTS = 720
# What the gateway keeps of runs' test forecasts between plots (`TEST_FORECASTS`).
TEST_FORECAST_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class PlotQuery:
    """What a forecast-vs-actual plot shows; every field has a default (see `forecast_vs_actual`)."""

    model_type: Annotated[str | None, Query(description="Whose forecasts (default: the champion).")] = None
    target: Annotated[str | None, Query(description="The column (default: the first target).")] = None
    step: Annotated[int, Query(ge=1, description="Steps ahead (1 = the next step).")] = 1
    start: Annotated[str | None, Query(description="First time shown (ISO 8601).")] = None
    end: Annotated[str | None, Query(description="Last time shown (ISO 8601).")] = None


Plot = Annotated[PlotQuery, Depends()]


def page_caller(request: Request) -> Principal:
    """The page's caller: an API key in the headers, as for the API, or the one the login page keeps in the
    browser's `flts_api_key` cookie (a browser sends no headers of its own); else to the login page."""
    keyring: KeyRing = request.app.state.keyring
    principal = keyring.principal_from_headers(request.headers)
    if principal is None and (key := request.cookies.get(KEY_COOKIE)):
        principal = keyring.principal(key)
    if principal is None:
        raise HTTPException(303, "an API key is needed", headers={"Location": f"/ui/login?next={request.url.path}"})
    return principal


PageCaller = Annotated[Principal, Depends(page_caller)]


def _allowed_on_page(identifier: str, principal: PageCaller) -> str:
    require_identifier(principal, identifier)
    return identifier


PageIdentifier = Annotated[str, Depends(_allowed_on_page)]


def _allowed(identifier: str, principal: Caller) -> str:
    """The path's identifier, once the caller may use it: the API's own check (flts.auth)."""
    require_identifier(principal, identifier)
    return identifier


AllowedIdentifier = Annotated[str, Depends(_allowed)]


def _checked(identifier: str, config_hash: str | None = None) -> None:
    checked_identifier(identifier)
    if config_hash is not None:
        checked_config_hash(config_hash)


class ByteBoundedLRU:
    """The values last used, up to ``max_bytes`` in all (each weighed by ``size_of``): the least recently used go
    first, and a value over the whole budget is never kept."""

    def __init__(self, max_bytes: int, size_of: Callable[[Any], int]) -> None:
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # the pages' routes run on the thread pool

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The value kept for ``key``, else ``load()``'s (loaded outside the lock, then kept if it fits)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        value = load()
        size = self.size_of(value)
        with self._lock:
            if size <= self.max_bytes and key not in self._entries:
                self._entries[key] = (value, size)
                self.bytes += size
                while self.bytes > self.max_bytes:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self.bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def _frame_bytes(frame: pd.DataFrame | None) -> int:
    return 0 if frame is None else int(frame.memory_usage(index=True, deep=True).sum())


# A finished run's test forecasts (immutable once the run finished), kept by bytes: a large lineage's frames
# are hundreds of MB each. Keys are finished runs' ids, so the frames a run kept none of (None) cost nothing.
TEST_FORECASTS = ByteBoundedLRU(TEST_FORECAST_CACHE_BYTES, _frame_bytes)


def _test_forecast(tracker: Tracker, run_id: str) -> pd.DataFrame | None:
    """A finished run's test forecasts, from `TEST_FORECASTS` when kept."""
    return TEST_FORECASTS.get((tracker, run_id), lambda: backtest.read_test_forecast(tracker, run_id))


def _timestamp(value: str | None, name: str) -> pd.Timestamp | None:
    if not value:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise HTTPException(422, f"{name}={value!r} is not a date-time (ISO 8601, e.g. 2024-01-31T12:00)") from exc
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def forecast_vs_actual(
    gw: Gateway,
    identifier: str,
    config_hash: str | None = None,
    query: PlotQuery = PlotQuery(),
    limit: int = DEFAULT_POINTS,
) -> ForecastVsActual:
    """A model's forecasts of one target on the test split, the actual values and persistence's, as series.

    Defaults: the identifier's champion's lineage, the lineage's champion (else its best-ranked model),
    the first target, one step ahead, and the latest ``limit`` test times.
    """
    _checked(identifier, config_hash)
    tracker, model_type, target, step = gw.tracker, query.model_type, query.target, query.step
    if config_hash is None:
        champion = tracker.champion(identifier)
        if champion is None:
            raise HTTPException(
                404, f"{identifier!r} has no champion yet: upload data for it, or pass a config_hash (`flts runs`)"
            )
        champion_run = tracker.run_summary(champion.run_id)
        config_hash, model_type = champion_run.config_hash, model_type or champion_run.model_type
    runs = [r for r in tracker.lineage_runs(config_hash) if r.identifier == identifier and r.status == "FINISHED"]
    chosen = latest_per_model_type(runs)
    if not chosen:
        raise HTTPException(404, f"no finished model in lineage {config_hash} of {identifier!r} (yet)")
    pointer = gw.champion_pointer(identifier, config_hash)
    lineage_champion = pointer.model_type if pointer else None
    if model_type is None:
        board = leaderboard(runs, gw.config.evaluation)
        model_type = lineage_champion or (board[0].model_type if board else next(iter(chosen)))
    if model_type not in chosen:
        raise HTTPException(404, f"no finished {model_type} run in lineage {config_hash}; have {sorted(chosen)}")
    frame = _test_forecast(tracker, chosen[model_type].run_id)
    if frame is None:
        raise HTTPException(
            404,
            f"run {chosen[model_type].run_id} kept no test forecasts (trained before they were kept): "
            "upload the data again with force=true (`flts upload --force`) to train it again",
        )
    targets = list(frame["target"].cat.categories)
    target = target or targets[0]
    if target not in targets:
        raise HTTPException(422, f"target {target!r} is not one of this model's targets {targets}")
    steps = int(frame["step"].max())
    if not 1 <= step <= steps:
        raise HTTPException(422, f"step must be between 1 and the model's horizon {steps}, got {step}")
    window = {"start": _timestamp(query.start, "start"), "end": _timestamp(query.end, "end"), "limit": limit}
    shown = backtest.select(frame, target, step, **window)
    series = [_series("actual", shown, "actual"), _series(model_type, shown, "forecast")]
    baseline = _test_forecast(tracker, chosen[BASELINE].run_id) if BASELINE in chosen else None
    if baseline is not None and model_type != BASELINE:
        series.append(_series(BASELINE, backtest.select(baseline, target, step, **window), "forecast"))
    times = frame["time"]
    return ForecastVsActual(
        identifier=identifier,
        config_hash=config_hash,
        model_type=model_type,
        lineage_champion=lineage_champion,
        run_id=chosen[model_type].run_id,
        models=sorted(chosen),
        target=target,
        targets=targets,
        step=step,
        steps=steps,
        test_period=[_iso(times.min()), _iso(times.max())],
        series=series,
    )


def _iso(moment: pd.Timestamp) -> str:
    return pd.Timestamp(moment).isoformat()


def _series(name: str, rows: pd.DataFrame, column: str) -> Series:
    values = [None if not math.isfinite(v) else round(float(v), 6) for v in rows[column]]
    mae = rows[column].sub(rows["actual"]).abs().mean() if column != "actual" else None
    return Series(
        name=name,
        times=[t.isoformat() for t in rows["time"]],
        values=values,
        mae=None if mae is None or not math.isfinite(mae) else float(mae),
    )


@router.get("/forecasts/{identifier}", tags=["runs"])
def forecasts(
    identifier: AllowedIdentifier,
    gw: GatewayDep,
    query: Plot,
    config_hash: Annotated[str | None, Query(description="The lineage (default: the champion's).")] = None,
    limit: Annotated[int, Query(ge=2, le=20_000, description="Most times shown (the latest).")] = DEFAULT_POINTS,
) -> ForecastVsActual:
    """A model's forecasts on the test split beside the actual values and persistence's: what `flts plot` draws."""
    return forecast_vs_actual(gw, identifier, config_hash, query, limit)


@router.get("/ui/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    if name not in STATIC_FILES:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC_FILES[name])


@router.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
def login(request: Request, next: str = "/ui") -> HTMLResponse:
    """Asks for an API key and keeps it in the browser's cookie (only with auth on; `flts keys create`)."""
    target = next if next.startswith("/ui") else "/ui"
    return templates.TemplateResponse(request, "login.html", {"next": target, "cookie": KEY_COOKIE})


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request, principal: PageCaller, gw: GatewayDep) -> HTMLResponse:
    """The identifiers the caller may use; the dead letters (every tenant's) for admins only."""
    identifiers = [i for i in gw.store.folders(gw.settings.bucket_processed) if principal.may_use(i)]
    dead_letter_count, dead_letters = None, []
    try:
        if principal.admin:
            dead_letter_count, dead_letters = latest_letters(gw.settings)
    except Exception as exc:  # the page still shows the lineages while Kafka is away
        log.warning("dead letters not read", exc_info=True)
        dead_letters = [f"not readable: {exc}"]
    context = {
        "identifiers": {identifier: gw.lineages(identifier, limit=LINEAGES_SHOWN) for identifier in identifiers},
        "dead_letter_count": dead_letter_count,
        "dead_letters": dead_letters,
    }
    return templates.TemplateResponse(request, "index.html", context)


@router.get("/ui/identifiers/{identifier}", response_class=HTMLResponse, include_in_schema=False)
def identifier_page(request: Request, identifier: PageIdentifier, gw: GatewayDep) -> HTMLResponse:
    _checked(identifier)
    champion = gw.tracker.champion(identifier)
    keys = sorted(
        (o["Key"] for o in gw.store.list(gw.settings.bucket_promotion, history_prefix(identifier))), reverse=True
    )
    uris = [f"s3://{gw.settings.bucket_promotion}/{key}" for key in keys[:HISTORY_SHOWN]]
    history = [Promotion.parse(gw.store.get_json(uri), uri) for uri in uris]
    context = {
        "identifier": identifier,
        "champion": champion,
        "current": next((h for h in history if champion and h.model_version == str(champion.version)), None),
        "history": history,
        "promotions": len(keys),
        "lineages": gw.lineages(identifier),
        "plot": _plot_context(gw, identifier, None, PlotQuery()),
    }
    return templates.TemplateResponse(request, "identifier.html", context)


def _live_context(gw: Gateway, identifier: str, config_hash: str, column: str) -> dict[str, Any]:
    status = gw.lineage_status(config_hash, identifier)
    runs = [r for r in gw.tracker.lineage_runs(config_hash) if r.identifier == identifier]
    suffix = f"__{column}" if column else ""
    wins = {entry.run_id: entry.column_wins for entry in status.leaderboard}
    board = [
        {
            "model_type": c.model_type,
            "run_id": c.run_id,
            "score": c.score,
            "values": {m: c.metrics.get(f"test_{m}{suffix}") for m in LEADERBOARD_METRICS},
            "not_servable_because": c.not_servable_because,
            "column_wins": wins.get(c.run_id, []),
        }
        for c in leaderboard(runs, gw.config.evaluation)
    ]
    running = any(run.status == "RUNNING" for run in status.training)
    return {"status": status, "board": board, "metrics": LEADERBOARD_METRICS, "final": status.decided and not running}


def _given(query: PlotQuery) -> dict[str, Any]:
    return {key: value for key, value in asdict(query).items() if value}


def _lineage_url(identifier: str, config_hash: str) -> str:
    return f"/ui/identifiers/{identifier}/lineages/{config_hash}"


@router.get("/ui/identifiers/{identifier}/lineages/{config_hash}", response_class=HTMLResponse, include_in_schema=False)
def lineage_page(
    request: Request,
    identifier: PageIdentifier,
    config_hash: str,
    gw: GatewayDep,
    query: Plot,
    column: str = "",
) -> HTMLResponse:
    _checked(identifier, config_hash)
    context = {
        **_live_context(gw, identifier, config_hash, column),
        "identifier": identifier,
        "config_hash": config_hash,
        "column": column,
        "base_url": _lineage_url(identifier, config_hash),
        "query": query,
        "plot_query": _given(query),
        "plot_url": f"{_lineage_url(identifier, config_hash)}/plot?{urlencode(_given(query))}",
        "plot": _plot_context(gw, identifier, config_hash, query),
    }
    return templates.TemplateResponse(request, "lineage.html", context)


@router.get(
    "/ui/identifiers/{identifier}/lineages/{config_hash}/live", response_class=HTMLResponse, include_in_schema=False
)
def lineage_live(
    request: Request, identifier: PageIdentifier, config_hash: str, gw: GatewayDep, column: str = ""
) -> HTMLResponse:
    """The stage timeline and the leaderboard, re-fetched by the page until the lineage is decided."""
    _checked(identifier, config_hash)
    context = {**_live_context(gw, identifier, config_hash, column), "identifier": identifier, "column": column}
    return templates.TemplateResponse(request, "_live.html", context)


def _plot_context(gw: Gateway, identifier: str, config_hash: str | None, query: PlotQuery) -> dict[str, Any]:
    """The plot, final (no more polling) once it shows what was asked for or the lineage's champion, or once eval
    has decided the lineage (superseded or without a winner, it will never have a champion to draw)."""
    decided = config_hash is not None and gw.eval_decision(identifier, config_hash) is not None
    try:
        answer = forecast_vs_actual(gw, identifier, config_hash, query)
    except HTTPException as exc:
        if exc.status_code != 404:
            raise
        return {"svg": None, "reason": exc.detail, "answer": None, "final": bool(decided)}
    final = bool(query.model_type or answer.lineage_champion or decided)
    return {"svg": forecast_figure(answer.model_dump()), "reason": None, "answer": answer, "final": final}


@router.get(
    "/ui/identifiers/{identifier}/lineages/{config_hash}/plot", response_class=HTMLResponse, include_in_schema=False
)
def lineage_plot(
    request: Request, identifier: PageIdentifier, config_hash: str, gw: GatewayDep, query: Plot
) -> HTMLResponse:
    """The plot's part of the lineage page, re-fetched until a scored model has test forecasts to draw."""
    _checked(identifier, config_hash)
    return templates.TemplateResponse(
        request, "_plot.html", {"plot": _plot_context(gw, identifier, config_hash, query)}
    )


@router.get("/ui/identifiers/{identifier}/lineages/{config_hash}/forecast.svg", include_in_schema=False)
def lineage_plot_svg(identifier: PageIdentifier, config_hash: str, gw: GatewayDep, query: Plot) -> Response:
    answer = forecast_vs_actual(gw, identifier, config_hash, query)
    return Response(forecast_figure(answer.model_dump()), media_type="image/svg+xml")
