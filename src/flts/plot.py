"""Time-series line plots as self-contained SVG text: the status page and `flts plot` draw with this.

Plain Python, no plotting library: the gateway image carries none, and an SVG needs no fonts,
no browser scripts and no network to show. Each series is one `<g class="series">` whose `data-points` attribute counts
the values drawn (a gap, None or NaN, breaks its line).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

# Colour-blind-safe (Okabe-Ito): actual values in black, then the models.
PALETTE = ("#000000", "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 40, 60


@dataclass(frozen=True)
class Series:
    """One line: ``times`` (datetimes or ISO 8601 strings) and their ``values`` (None or NaN: no value)."""

    name: str
    times: Sequence[datetime | str]
    values: Sequence[float | None]
    dashed: bool = False


def _seconds(moment: datetime | str) -> float:
    when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range must be finite, got [{low}, {high}]")
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 12))
        tick += step
    return ticks


# Round steps for a time axis, in seconds: minutes, hours, days, a week.
TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def time_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About ``count`` round moments (on the minute, hour or UTC midnight) in [low, high] (epoch seconds)."""
    span = high - low
    steps = (*TIME_STEPS, TIME_STEPS[-1] * max(1, math.ceil(span / count / TIME_STEPS[-1])))
    step = min(steps, key=lambda candidate: abs(span / candidate - count))
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) // step) + 1)]


def _time_label(seconds: float, span: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%m-%d %H:%M" if span < 3 * 86400 else "%Y-%m-%d")


def line_plot_svg(
    series: Sequence[Series], title: str = "", y_label: str = "", width: int = 900, height: int = 360
) -> str:
    """The series on one time axis, with y and time ticks and a legend; an empty plot says "no data"."""
    points = [
        [(_seconds(t), float(v)) if _finite(v) else None for t, v in zip(s.times, s.values, strict=True)]
        for s in series
    ]
    drawn = [p for line in points for p in line if p is not None]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flts-plot" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#666">no data</text></svg>')
        return "".join(parts)
    x_low, x_high = min(p[0] for p in drawn), max(p[0] for p in drawn)
    y_low, y_high = min(p[1] for p in drawn), max(p[1] for p in drawn)
    if y_high == y_low:
        y_low, y_high = y_low - 1, y_high + 1
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    plot_width = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = height - MARGIN_TOP - MARGIN_BOTTOM

    def x_of(seconds: float) -> float:
        return MARGIN_LEFT + (seconds - x_low) / (x_high - x_low) * plot_width

    def y_of(value: float) -> float:
        return MARGIN_TOP + (y_high - value) / (y_high - y_low) * plot_height

    bottom = MARGIN_TOP + plot_height
    parts.append(
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_width}" height="{plot_height}" '
        'fill="none" stroke="#999"/>'
    )
    for tick in nice_ticks(y_low, y_high):
        y = y_of(tick)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    span = x_high - x_low
    for tick in time_ticks(x_low, x_high):
        x = x_of(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 5}" stroke="#999"/>'
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="{"end" if x > width - 60 else "middle"}">'
            f"{_time_label(tick, span)}</text>"
        )
    if y_label:
        parts.append(
            f'<text transform="translate(14 {MARGIN_TOP + plot_height / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>'
        )
    for index, (line, spec) in enumerate(zip(points, series, strict=True)):
        colour = PALETTE[index % len(PALETTE)]
        dash = ' stroke-dasharray="6 4"' if spec.dashed else ""
        segments: list[list[tuple[float, float]]] = [[]]
        for point in line:
            if point is None:
                segments.append([])
            else:
                segments[-1].append(point)
        count = sum(len(segment) for segment in segments)
        parts.append(f'<g class="series" data-name="{escape(spec.name)}" data-points="{count}">')
        for segment in filter(None, segments):
            coordinates = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in segment)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="{coordinates}"/>')
        parts.append("</g>")
        legend_x = MARGIN_LEFT + index * (plot_width / max(len(series), 1))
        parts.append(
            f'<line x1="{legend_x:.1f}" x2="{legend_x + 24:.1f}" y1="{height - 14}" y2="{height - 14}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{legend_x + 30:.1f}" y="{height - 10}">{escape(spec.name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _forecast_lines(answer: dict[str, Any]) -> tuple[list[Series], str]:
    """The series and title of the gateway's forecast-vs-actual answer (`GET /forecasts/ID`): the actual
    values, the model's forecasts and persistence's (dashed), each model's MAE over the times shown."""
    series = [
        Series(
            f"{line['name']} (MAE {line['mae']:.4g})" if line.get("mae") is not None else line["name"],
            line["times"],
            line["values"],
            dashed=index > 1,
        )
        for index, line in enumerate(answer["series"])
    ]
    ahead = "1 step" if answer["step"] == 1 else f"{answer['step']} steps"
    title = (
        f"{answer['identifier']} / {answer['target']}: {answer['model_type']} forecast {ahead} ahead vs actual "
        f"(test split, lineage {answer['config_hash'][:12]})"
    )
    return series, title


def forecast_figure(answer: dict[str, Any]) -> str:
    """The forecast-vs-actual answer as an SVG: what the status page shows and `flts plot` writes."""
    series, title = _forecast_lines(answer)
    return line_plot_svg(series, title=title, y_label=answer["target"])


def forecast_png(answer: dict[str, Any], path: Path) -> None:
    """The same picture as a PNG, drawn by matplotlib where it is installed (Prophet, the nonml extra, brings it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        raise RuntimeError("a PNG needs matplotlib (pip install matplotlib); an .svg needs nothing") from exc
    series, title = _forecast_lines(answer)
    figure, axes = pyplot.subplots(figsize=(9, 3.6), dpi=100)
    for index, line in enumerate(series):
        times = [datetime.fromisoformat(t) if isinstance(t, str) else t for t in line.times]
        values = [v if _finite(v) else math.nan for v in line.values]
        style = "--" if line.dashed else "-"
        axes.plot(times, values, style, color=PALETTE[index % len(PALETTE)], linewidth=1.2, label=line.name)
    axes.set_title(title, fontsize=9)
    axes.set_ylabel(answer["target"])
    axes.legend(fontsize=8, loc="upper left")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)
