"""The gateway's cache of runs' test forecasts is bounded by bytes, not by entries (gateway_container/ui.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gateway_container.ui import ByteBoundedLRU, _frame_bytes


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"forecast": np.zeros(rows), "actual": np.zeros(rows)})


def test_a_cache_over_its_byte_budget_evicts_the_least_recently_used():
    loads: list[str] = []
    frames = {name: _frame(1_000) for name in "abc"}  # 16 kB each (two float64 columns) + the index
    size = _frame_bytes(frames["a"])
    cache = ByteBoundedLRU(max_bytes=2 * size, size_of=_frame_bytes)

    def get(name: str) -> pd.DataFrame:
        return cache.get(name, lambda: loads.append(name) or frames[name])

    for name in "aba":  # a is now the most recently used
        get(name)
    assert loads == ["a", "b"] and cache.bytes == 2 * size
    get("c")  # over the budget: b goes, a stays
    assert len(cache) == 2 and cache.bytes == 2 * size
    for name in "ab":
        get(name)
    assert loads == ["a", "b", "c", "b"]


def test_a_value_over_the_whole_budget_is_served_but_never_kept():
    cache = ByteBoundedLRU(max_bytes=1_000, size_of=_frame_bytes)
    big = _frame(10_000)
    assert cache.get("big", lambda: big) is big
    assert len(cache) == 0 and cache.bytes == 0


def test_a_run_without_test_forecasts_is_kept_at_no_cost():
    cache = ByteBoundedLRU(max_bytes=1, size_of=_frame_bytes)
    loads = []
    for _ in range(2):
        assert cache.get("old-run", lambda: loads.append(1)) is None
    assert loads == [1] and cache.bytes == 0
