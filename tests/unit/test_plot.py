"""The SVG line plot: every value drawn where it belongs, gaps break lines, and the figure of /forecasts."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from flts.plot import Series, forecast_figure, forecast_png, line_plot_svg, nice_ticks, time_ticks

SVG = "{http://www.w3.org/2000/svg}"
TIMES = [f"2024-01-01T00:{minute:02d}:00" for minute in range(0, 20, 2)]


def _groups(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("data-name"): g for g in root.iter(f"{SVG}g") if g.get("class") == "series"}


def _points(group: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]
        for line in group.iter(f"{SVG}polyline")
    ]


def test_each_series_is_a_group_with_one_point_per_value():
    svg = line_plot_svg([Series("actual", TIMES, list(range(10))), Series("GRU", TIMES, [v + 0.5 for v in range(10)])])
    groups = _groups(svg)
    assert list(groups) == ["actual", "GRU"]
    assert [g.get("data-points") for g in groups.values()] == ["10", "10"]
    assert [len(line) for line in _points(groups["actual"])] == [10]


def test_later_times_are_right_and_larger_values_are_higher():
    svg = line_plot_svg([Series("up", TIMES, list(range(10)))])
    (line,) = _points(_groups(svg)["up"])
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs) and len(set(xs)) == 10
    assert ys == sorted(ys, reverse=True)  # SVG's y grows downwards


def test_a_missing_value_breaks_the_line_and_is_not_counted():
    values = [1.0, 2.0, None, 4.0, math.nan, 6.0, 7.0, 8.0, 9.0, 10.0]
    group = _groups(line_plot_svg([Series("gappy", TIMES, values)]))["gappy"]
    assert group.get("data-points") == "8"
    assert [len(line) for line in _points(group)] == [2, 1, 5]


def test_no_values_at_all_says_no_data():
    svg = line_plot_svg([Series("empty", [], [])], title="t")
    assert "no data" in svg
    ET.fromstring(svg)


def test_names_and_titles_are_escaped():
    svg = line_plot_svg([Series("<b>&", TIMES[:2], [1, 2])], title="a < b")
    assert "a &lt; b" in svg and "&lt;b&gt;&amp;" in svg
    ET.fromstring(svg)


def test_a_constant_series_is_drawn_inside_the_frame():
    group = _groups(line_plot_svg([Series("flat", TIMES, [3.0] * 10)], height=300))["flat"]
    (line,) = _points(group)
    assert all(40 <= y <= 240 for _, y in line)


@pytest.mark.parametrize(
    "low, high, expected",
    [(0, 10, [0, 2, 4, 6, 8, 10]), (0.13, 0.61, [0.2, 0.3, 0.4, 0.5, 0.6]), (5, 5, [5])],
)
def test_ticks_are_round_numbers_inside_the_range(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


ANSWER = {
    "identifier": "cell-7",
    "config_hash": "a" * 64,
    "model_type": "GRU",
    "target": "down",
    "step": 1,
    "series": [
        {"name": "actual", "times": TIMES, "values": list(range(10)), "mae": None},
        {"name": "GRU", "times": TIMES, "values": list(range(1, 11)), "mae": 1.0},
        {"name": "PERSISTENCE", "times": TIMES, "values": list(range(2, 12)), "mae": 2.0},
    ],
}


def test_the_forecast_figure_draws_actual_model_and_persistence_with_their_mae():
    svg = forecast_figure(ANSWER)
    assert list(_groups(svg)) == ["actual", "GRU (MAE 1)", "PERSISTENCE (MAE 2)"]
    assert re.search(r"cell-7 / down: GRU forecast 1 step ahead", svg)
    assert svg.count("stroke-dasharray") == 2  # persistence's line and its legend mark


def test_time_ticks_fall_on_round_hours_and_cover_the_range():
    low = 1_704_067_200 + 1_234  # 2024-01-01 00:20:34 UTC
    ticks = time_ticks(low, low + 20 * 3600)
    assert all(tick % 3600 == 0 for tick in ticks)
    assert ticks[0] >= low and ticks[-1] <= low + 20 * 3600 and 4 <= len(ticks) <= 11


def test_the_same_figure_is_written_as_a_png(tmp_path):
    path = tmp_path / "forecast.png"
    forecast_png(ANSWER, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
