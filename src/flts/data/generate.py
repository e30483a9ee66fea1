"""The bundled dataset: synthetic LTE base-station measurements on a 2-minute grid.

The project ships no external data, so this generator has to be hard enough that model choice
matters: daily and weekly cycles, columns driven by a shared user count, heavy-tailed bursts,
slowly varying AR(1)-like noise (persistence is a strong but beatable baseline), and the defects
preprocessing must handle (scattered NaNs, an outage of missing rows, duplicate timestamps).
Everything is seeded and vectorised.

Named scenarios (`SCENARIOS`) add, on top of the default data, the phenomena real telemetry has and
the models must survive: a level shift of the uplink between training and test, outages (runs of
zeros and of missing cells), heavy-tailed uplink bursts, and idle periods where the per-user columns
are missing. A scenario draws from a generator of its own, so every column it leaves alone holds the
same values as in the default data of the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FREQUENCY = "2min"
MEASURED_COLUMNS: tuple[str, ...] = (
    "down",
    "up",
    "rnti_count",
    "mcs_down",
    "mcs_down_var",
    "mcs_up",
    "mcs_up_var",
    "rb_down",
    "rb_down_var",
    "rb_up",
    "rb_up_var",
)
NAN_FRACTION = 0.0005
MAX_OUTAGE_ROWS = 15
MAX_DUPLICATES = 3
UPLINK_COLUMNS: tuple[str, ...] = ("up", "rb_up")
LEVEL_SHIFT_FACTOR = 0.2  # the test period's uplink level relative to what training saw
# What a cell without users reports: no traffic and no resource blocks, and nothing measured per user.
IDLE_ZERO_COLUMNS: tuple[str, ...] = ("down", "up", "rnti_count", "rb_down", "rb_up")
IDLE_MISSING_COLUMNS: tuple[str, ...] = tuple(c for c in MEASURED_COLUMNS if c.startswith("mcs_") or c.endswith("_var"))


def _smooth_noise(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """Stationary AR(1)-like noise (std ``sigma``): white noise through a truncated exponential kernel."""
    length = int(np.ceil(np.log(1e-4) / np.log(phi)))
    kernel = phi ** np.arange(length)
    shocks = rng.standard_normal(n + length - 1)
    return np.convolve(shocks, kernel, mode="valid") * sigma * np.sqrt(1.0 - phi**2)


def _bursts(rng: np.random.Generator, n: int, rate: float, decay: float) -> np.ndarray:
    """Sparse heavy-tailed (Pareto) shocks that decay geometrically: flash crowds, big downloads."""
    impulses = np.where(rng.random(n) < rate, np.minimum(rng.pareto(1.8, n), 8.0), 0.0)
    kernel = decay ** np.arange(int(np.ceil(np.log(1e-3) / np.log(decay))))
    return np.convolve(impulses, kernel)[:n]


def _jitter(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """White multiplicative measurement noise: what persistence copies and a learned model averages out."""
    return np.exp(rng.normal(0.0, sigma, n))


def _daily_profile(hours: np.ndarray, day_of_week: np.ndarray) -> np.ndarray:
    """Relative cell load: night trough at 04:00, lunch bump, evening peak; quieter weekend days."""
    base = (0.5 - 0.5 * np.cos(2 * np.pi * (hours - 4.0) / 24.0)) ** 1.5
    evening = 0.3 * np.exp(-(((hours - 20.5) / 2.5) ** 2))
    lunch = 0.12 * np.exp(-(((hours - 12.5) / 1.5) ** 2))
    weekend = np.isin(day_of_week, (5, 6)) * 0.22 * np.exp(-(((hours - 11.0) / 4.0) ** 2))
    return 0.15 + 0.75 * base + evening + lunch - weekend


def _measurements(rng: np.random.Generator, times: pd.DatetimeIndex) -> pd.DataFrame:
    n = len(times)
    hours = times.hour.to_numpy() + times.minute.to_numpy() / 60.0
    load = _daily_profile(hours, times.dayofweek.to_numpy())
    load = load * np.exp(_smooth_noise(rng, n, 0.995, 0.15) + _smooth_noise(rng, n, 0.9, 0.05))
    burst = _bursts(rng, n, rate=1 / 180, decay=0.9)

    users = 35.0 * load * (1.0 + 0.15 * burst)
    rnti_count = rng.poisson(users).astype(float)
    rate_per_user = 900.0 * np.exp(_smooth_noise(rng, n, 0.97, 0.25))
    down = rnti_count * rate_per_user * (1.0 + 0.8 * burst) * _jitter(rng, n, 0.12)
    up = (down * 0.14 * np.exp(_smooth_noise(rng, n, 0.95, 0.2)) + 20.0 * rnti_count) * _jitter(rng, n, 0.15)

    relative_load = users / 35.0
    mcs_down = np.clip(22.0 - 4.0 * relative_load + _smooth_noise(rng, n, 0.95, 1.5) + rng.normal(0, 0.6, n), 0, 28)
    mcs_up = np.clip(16.0 - 3.0 * relative_load + _smooth_noise(rng, n, 0.95, 1.2) + rng.normal(0, 0.5, n), 0, 28)
    mcs_down_var = (2.0 + 0.08 * rnti_count) * np.exp(_smooth_noise(rng, n, 0.9, 0.3)) * _jitter(rng, n, 0.2)
    mcs_up_var = (1.5 + 0.06 * rnti_count) * np.exp(_smooth_noise(rng, n, 0.9, 0.3)) * _jitter(rng, n, 0.2)

    rb_down = np.clip(100.0 * down / (3750.0 * (mcs_down + 1.0)) * _jitter(rng, n, 0.05), 0.0, 100.0)
    rb_up = np.clip(100.0 * up / (1200.0 * (mcs_up + 1.0)) * _jitter(rng, n, 0.05), 0.0, 100.0)
    rb_down_var = (2.0 + 0.3 * rb_down) * np.exp(_smooth_noise(rng, n, 0.9, 0.25)) * _jitter(rng, n, 0.2)
    rb_up_var = (2.0 + 0.3 * rb_up) * np.exp(_smooth_noise(rng, n, 0.9, 0.25)) * _jitter(rng, n, 0.2)

    return pd.DataFrame(
        {
            "down": np.round(down, 1),
            "up": np.round(up, 1),
            "rnti_count": rnti_count,
            "mcs_down": np.round(mcs_down, 2),
            "mcs_down_var": np.round(mcs_down_var, 3),
            "mcs_up": np.round(mcs_up, 2),
            "mcs_up_var": np.round(mcs_up_var, 3),
            "rb_down": np.round(rb_down, 2),
            "rb_down_var": np.round(rb_down_var, 3),
            "rb_up": np.round(rb_up, 2),
            "rb_up_var": np.round(rb_up_var, 3),
        }
    )


Scenario = Callable[[np.random.Generator, pd.DatetimeIndex, pd.DataFrame, int], pd.DataFrame]


def _level_shift(
    rng: np.random.Generator, times: pd.DatetimeIndex, values: pd.DataFrame, test_start: int
) -> pd.DataFrame:
    """The uplink drops to LEVEL_SHIFT_FACTOR of its level where the test period starts (a re-planned cell)."""
    values.loc[test_start:, list(UPLINK_COLUMNS)] *= LEVEL_SHIFT_FACTOR
    return values.round(3)


def _runs(rng: np.random.Generator, start: int, stop: int, count: int, shortest: int, longest: int) -> list[slice]:
    """`count` runs of `shortest`..`longest` rows at random places within [start, stop) (they may overlap)."""
    starts = rng.integers(start, max(stop - longest, start + 1), count)
    lengths = rng.integers(shortest, longest + 1, count)
    return [slice(int(first), int(first + length)) for first, length in zip(starts, lengths, strict=True)]


def _outages(rng: np.random.Generator, times: pd.DatetimeIndex, values: pd.DataFrame, test_start: int) -> pd.DataFrame:
    """A failing station, in training and in test: runs of zeros in every column (one per ~1,500 rows) and
    runs of missing cells in single columns (one per ~500 rows)."""
    cells = values.to_numpy(copy=True)
    for start, stop in ((0, test_start), (test_start, len(cells))):
        for run in _runs(rng, start, stop, max((stop - start) // 1500, 1), 10, 60):
            cells[run] = 0.0
        missing_runs = _runs(rng, start, stop, max((stop - start) // 500, 1), 3, 40)
        for run, column in zip(missing_runs, rng.integers(0, cells.shape[1], len(missing_runs)), strict=True):
            cells[run, column] = np.nan
    return pd.DataFrame(cells, columns=values.columns)


def _uplink_bursts(
    rng: np.random.Generator, times: pd.DatetimeIndex, values: pd.DataFrame, test_start: int
) -> pd.DataFrame:
    """Short heavy-tailed uplink bursts (uploads, backups): Pareto shocks decaying fast, one per ~2 hours."""
    burst = _bursts(rng, len(values), rate=1 / 60, decay=0.6) * 3.0
    values["up"] = np.round(values["up"] * (1.0 + burst), 1)
    values["rb_up"] = np.round(np.clip(values["rb_up"] * (1.0 + burst), 0.0, 100.0), 2)
    return values


def _idle(rng: np.random.Generator, times: pd.DatetimeIndex, values: pd.DataFrame, test_start: int) -> pd.DataFrame:
    """Nights without users on about half the days: 1 to 3 hours from between 01:30 and 03:00 where traffic,
    users and resource blocks are 0 and the per-user columns (MCS, variances) are missing."""
    days = times.normalize()
    _, day = np.unique(days.asi8, return_inverse=True)
    n_days = int(day.max()) + 1
    idle_day = rng.random(n_days) < 0.5
    begin = rng.uniform(1.5, 3.0, n_days)[day]
    end = begin + rng.uniform(1.0, 3.0, n_days)[day]
    hours = (times.asi8 - days.asi8) / 3.6e12
    idle = idle_day[day] & (hours >= begin) & (hours < end)
    values.loc[idle, list(IDLE_ZERO_COLUMNS)] = 0.0
    values.loc[idle, list(IDLE_MISSING_COLUMNS)] = np.nan
    return values


SCENARIOS: dict[str, Scenario | None] = {
    "default": None,
    "level_shift": _level_shift,
    "outages": _outages,
    "uplink_bursts": _uplink_bursts,
    "idle": _idle,
}


def _with_time(times: pd.DatetimeIndex, values: pd.DataFrame, identifier: str | None) -> pd.DataFrame:
    frame = values.copy()
    frame.insert(0, "time", np.datetime_as_string(times.to_numpy(), unit="s"))
    if identifier is not None:
        frame.insert(1, "identifier", identifier)
    return frame


def generate_lte_dataset(
    train_rows: int = 16_000,
    test_rows: int = 4_000,
    seed: int = 7,
    start: str = "2024-01-01",
    identifier: str | None = None,
    scenario: str = "default",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) frames with exactly ``train_rows`` and ``test_rows`` rows; test continues train.

    The train frame carries the defects: ~0.05 % NaN cells, an outage of up to 15 missing rows and
    up to 3 duplicated timestamps (a re-sent row with different values; the later one is right).
    The test frame is clean unless the ``scenario`` (a key of SCENARIOS) puts defects there too.
    ``time`` holds naive ISO-8601 strings (UTC).
    """
    if train_rows < 1 or test_rows < 1:
        raise ValueError("train_rows and test_rows must be positive")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    outage = min(MAX_OUTAGE_ROWS, train_rows // 200)
    duplicates = min(MAX_DUPLICATES, train_rows // 1000)
    train_steps = train_rows + outage - duplicates
    times = pd.date_range(start, periods=train_steps + test_rows, freq=FREQUENCY)
    values = _measurements(rng, times)
    apply_scenario = SCENARIOS[scenario]
    if apply_scenario is not None:
        scenario_rng = np.random.default_rng([seed, list(SCENARIOS).index(scenario)])
        values = apply_scenario(scenario_rng, times, values, train_steps)

    train_values = values.iloc[:train_steps]
    keep = np.ones(train_steps, dtype=bool)
    outage_start = int(train_steps * 0.37)
    keep[outage_start : outage_start + outage] = False
    train_times = times[:train_steps][keep]
    train_values = train_values[keep].reset_index(drop=True)
    cells = train_values.to_numpy()
    cells[rng.random(cells.shape) < NAN_FRACTION] = np.nan
    train_values = pd.DataFrame(cells, columns=train_values.columns)
    train = _with_time(train_times, train_values, identifier)

    if duplicates:
        originals = np.sort(rng.choice(len(train), size=duplicates, replace=False))
        resent = train.iloc[originals].copy()
        measured = list(MEASURED_COLUMNS)
        resent[measured] = (resent[measured] * rng.uniform(0.9, 1.1, (duplicates, 1))).round(3)
        train = pd.concat([train, resent])
        order = np.argsort(np.concatenate([np.arange(len(train) - duplicates), originals]), kind="stable")
        train = train.iloc[order].reset_index(drop=True)

    test = _with_time(times[train_steps:], values.iloc[train_steps:].reset_index(drop=True), identifier)
    return train, test


def write_dataset(directory: Path | str, **kwargs: Any) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` into ``directory``; kwargs go to generate_lte_dataset."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    train, test = generate_lte_dataset(**kwargs)
    train_path, test_path = target / "train.csv", target / "test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    return train_path, test_path
