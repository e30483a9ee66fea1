"""The names preprocessing generates beside the measured columns, in one place.

Preprocess adds these columns; an upload must not bring a measured column of the same name (it would be
silently overwritten), so the upload checks read the same definitions.
"""

from __future__ import annotations

import re

GAP_COLUMN = "is_gap"
TIME_FEATURE_COLUMNS: dict[str, tuple[str, str]] = {
    "hour": ("hour_sin", "hour_cos"),
    "day_of_week": ("dow_sin", "dow_cos"),
}
_LAG_SUFFIX = re.compile(r"_lag\d+$")


def lag_column(column: str, lag: int) -> str:
    return f"{column}_lag{lag}"


def generated_name(name: str) -> bool:
    """Whether preprocessing could generate a feature of this name (whatever the config turns on)."""
    generated = {GAP_COLUMN, *(n for pair in TIME_FEATURE_COLUMNS.values() for n in pair)}
    return name in generated or bool(_LAG_SUFFIX.search(name))
