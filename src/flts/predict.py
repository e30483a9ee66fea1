"""Serving a champion: raw rows in, forecasts with timestamps on the original scale out.

A request's rows become numpy arrays at once (no pandas on the request path) and go through the
very transform fitted at training (`FeatureTransform`: the stored clip bounds and scaler, the same
columns in the same order, the same gap filling and `is_gap` flag). The work splits in two:

- `window_from_rows` / `window_from_columns` (per request): parse, check, put the rows on the
  training grid and fill missing cells; every problem is a `RequestError` naming the row or column;
- `forecast` (shared by a micro-batch): one forward pass for any number of windows, back to the
  original scale, with a per-window error for an input or forecast that is not finite.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pandas.tseries.frequencies import to_offset

from flts.data.metadata import PreprocessingMetadata
from flts.data.preprocess import GAP_COLUMN, FeatureTransform, on_training_grid
from flts.layout import PREPROCESSING_FILE
from flts.models.base import Forecaster, load_forecaster

# A window with more of its cells missing than this share is refused rather than filled.
MAX_MISSING_SHARE = 0.5
_MIN_NS, _MAX_NS = pd.Timestamp.min.value, pd.Timestamp.max.value
_RANGE = f"{pd.Timestamp.min.ceil('s').isoformat()}Z to {pd.Timestamp.max.floor('s').isoformat()}Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class RequestError(ValueError):
    """The request cannot be served as sent (a 422 with this message)."""


@dataclass(frozen=True)
class ModelIdentity:
    identifier: str
    model_type: str
    model_version: str
    run_id: str
    config_hash: str


@dataclass(frozen=True)
class Window:
    """One window as the model reads it: the last `rows_needed` steps of the training grid, gaps filled."""

    nanoseconds: np.ndarray  # int64 UTC [rows], consecutive grid steps
    values: np.ndarray  # float64 [rows, measured columns], no NaN
    gap: np.ndarray  # bool [rows]: the step was missing or had a missing cell (the is_gap feature)
    row_numbers: np.ndarray  # int64 [rows]: the request's row of each step (1 = first sent; 0 = not sent)
    filled: tuple[tuple[int, int], ...] = ()  # (step, column index) of each cell that was filled

    @property
    def last_ns(self) -> int:
        return int(self.nanoseconds[-1])


@dataclass(frozen=True)
class Series:
    """Consecutive steps of one series on its training grid, on the original scale, gaps filled."""

    nanoseconds: np.ndarray  # int64 UTC [rows]
    values: np.ndarray  # float64 [rows, measured columns, in the metadata's order]
    gap: np.ndarray  # bool [rows]


def processed_series(frame: pd.DataFrame, metadata: PreprocessingMetadata) -> Series:
    """A processed split (scaled by its lineage, whose `metadata` this is) back on the original scale."""
    transform = FeatureTransform.from_metadata(metadata)
    times = pd.DatetimeIndex(frame[metadata.time_column])
    times = times.tz_convert("UTC") if times.tz is not None else times.tz_localize("UTC")
    scaled = frame[list(transform.measured)].to_numpy(dtype=np.float64)
    gap = frame[GAP_COLUMN].to_numpy() > 0.5 if GAP_COLUMN in frame else np.zeros(len(frame), dtype=bool)
    return Series(times.as_unit("ns").asi8.copy(), scaled * transform.scale + transform.center, gap)


def raw_series(frame: pd.DataFrame, metadata: PreprocessingMetadata) -> Series:
    """Raw measurements (read_measurements' frame) on the grid of the lineage whose `metadata` this is,
    gaps filled as preprocessing fills them (a DataError names what is missing)."""
    return Series(*on_training_grid(frame, metadata))


@dataclass(frozen=True)
class Forecasts:
    """Forecasts of N windows: values on the original scale and their times, and why any cannot be served."""

    values: np.ndarray  # float64 [N, length, targets]
    nanoseconds: np.ndarray  # int64 [N, length]
    errors: list[str | None]


def iso_times(nanoseconds: np.ndarray) -> list[str]:
    """int64 UTC nanoseconds as ISO-8601 strings to the second, with a Z."""
    return [_iso_time(value) for value in np.asarray(nanoseconds, dtype=np.int64).tolist()]


def directory_bytes(directory: Path) -> int:
    """The size of every file under `directory` (a model bundle as downloaded)."""
    return sum(path.stat().st_size for path in Path(directory).rglob("*") if path.is_file())


@functools.lru_cache(maxsize=16_384)
def _iso_time(nanoseconds: int) -> str:
    return (_EPOCH + timedelta(microseconds=nanoseconds // 1000)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ServingModel:
    identity: ModelIdentity
    forecaster: Forecaster
    metadata: PreprocessingMetadata
    max_inference_length: int
    transform: FeatureTransform
    step_ns: int
    anchor_ns: int
    target_center: np.ndarray
    target_scale: np.ndarray
    _cells_of: Callable[[dict[str, Any]], Any]
    bundle_bytes: int = 0  # its saved files' size: roughly what holding it costs
    member_bytes: int = 0  # a column composite's other members' (flts.models.composite), 0 for a single model

    @classmethod
    def load(cls, directory: Path, identity: ModelIdentity, max_inference_length: int) -> ServingModel:
        metadata = PreprocessingMetadata.read(directory / PREPROCESSING_FILE)
        transform = FeatureTransform.from_metadata(metadata)
        targets = [transform.measured.index(column) for column in metadata.target_columns]
        return cls(
            identity,
            load_forecaster(directory),
            metadata,
            max_inference_length,
            transform,
            step_ns=pd.Timedelta(to_offset(metadata.frequency)).value,
            anchor_ns=pd.Timestamp(metadata.grid_anchor).value,
            target_center=transform.center[targets],
            target_scale=transform.scale[targets],
            _cells_of=operator.itemgetter(*transform.measured),
            bundle_bytes=directory_bytes(directory),
        )

    @functools.cached_property
    def time_column(self) -> str:
        return self.metadata.time_column

    @functools.cached_property
    def measured_columns(self) -> list[str]:
        return list(self.metadata.measured_columns)

    @functools.cached_property
    def target_columns(self) -> list[str]:
        return list(self.metadata.target_columns)

    @functools.cached_property
    def input_seq_len(self) -> int:
        return self.metadata.config.windows.input_seq_len

    @functools.cached_property
    def output_seq_len(self) -> int:
        return self.metadata.config.windows.output_seq_len

    @functools.cached_property
    def rows_needed(self) -> int:
        """Rows a window must carry: the model's input length plus the longest lag feature."""
        return self.input_seq_len + self.transform.skip

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity.__dict__,
            "time_column": self.time_column,
            "input_columns": self.measured_columns,
            "target_columns": self.target_columns,
            "rows_needed": self.rows_needed,
            "input_seq_len": self.input_seq_len,
            "output_seq_len": self.output_seq_len,
            "frequency": self.metadata.frequency,
            "max_inference_length": self.max_inference_length,
            "max_missing_share": MAX_MISSING_SHARE,
            "column_models": self.column_models,
        }

    @property
    def column_models(self) -> dict[str, str]:
        """Which model type forecasts each target column (several with a ColumnComposite champion)."""
        served_by = getattr(self.forecaster, "column_models", None)
        return served_by or dict.fromkeys(self.target_columns, self.identity.model_type)

    # ------------------------------------------------------------------ per request: parse and check

    def check_length(self, length: int | None) -> int:
        """The number of steps to forecast (default output_seq_len), or a RequestError."""
        length = length or self.output_seq_len
        if length > self.max_inference_length:
            raise RequestError(f"inference_length {length} exceeds the limit of {self.max_inference_length}")
        if length > self.output_seq_len and set(self.target_columns) != set(self.measured_columns):
            raise RequestError(
                f"inference_length {length} > output_seq_len {self.output_seq_len} needs every input column "
                "to be forecast (recursive forecasting), but this model forecasts only "
                f"{self.target_columns}"
            )
        return length

    def check_horizon(self, window: Window, length: int, where: str = "") -> None:
        """Every forecast time must be a representable timestamp (pandas' range ends in 2262)."""
        if window.last_ns + length * self.step_ns > _MAX_NS:
            step = (_MAX_NS - window.last_ns) // self.step_ns + 1
            raise RequestError(
                f"{where}step {step} of the forecast falls after {pd.Timestamp.max.floor('s').isoformat()}Z, "
                f"the last timestamp served: ask for at most {step - 1} steps after this window"
            )

    def window_from_rows(self, rows: list[dict[str, Any]], position: int = 0) -> Window:
        """One window from `rows` ({column: cell}, oldest first)."""
        where = f"window {position}: " if position else ""
        columns = [self.time_column, *self.measured_columns]
        if not rows or any(name not in rows[0] for name in columns):
            missing = [name for name in columns if not any(name in row for row in rows)]
            if missing:
                raise RequestError(f"{where}missing columns {missing}; the model needs {self.measured_columns}")
        self._check_count(len(rows), where)
        times = [row.get(self.time_column) for row in rows]
        try:
            cells = list(map(self._cells_of, rows))
        except KeyError:  # a row without some column: a missing cell
            cells = [[row.get(name) for name in self.measured_columns] for row in rows]
        return self._window(times, cells, where)

    def window_from_columns(self, data: dict[str, list[Any]], time_key: str | None = None) -> Window:
        """One window from the earlier system's shape: {column: [cells]} with the time under `time_key`."""
        time_key = time_key or self.time_column
        lengths = {len(values) for values in data.values()}
        if len(lengths) > 1:
            raise RequestError(f"every column in data must have the same length (got lengths {sorted(lengths)})")
        missing = [name for name in [time_key, *self.measured_columns] if name not in data]
        if missing:
            raise RequestError(f"missing columns {missing}; the model needs {self.measured_columns}")
        self._check_count(len(data[time_key]), "")
        cells = list(zip(*(data[name] for name in self.measured_columns), strict=True))
        return self._window(data[time_key], cells, "")

    def _check_count(self, count: int, where: str) -> None:
        if count < self.rows_needed:
            raise RequestError(f"{where}{count} rows sent; the model needs the last {self.rows_needed} rows")

    def _window(self, times: list[Any], cells: list[Any], where: str) -> Window:
        nanoseconds = _timestamps(times, self.time_column, where)
        values = _numbers(cells, self.measured_columns, where)
        steps = np.diff(nanoseconds)
        if not (steps > 0).all():
            if (steps < 0).any():
                raise RequestError(f"{where}rows must be in increasing {self.time_column} order, oldest first")
            first = int(np.flatnonzero(steps == 0)[0])
            raise RequestError(
                f"{where}rows {first + 1} and {first + 2}: {self.time_column} {times[first]} appears more than once"
            )
        if ((nanoseconds - self.anchor_ns) % self.step_ns).any():
            off_grid = np.flatnonzero((nanoseconds - self.anchor_ns) % self.step_ns)
            raise RequestError(
                f"{where}row {off_grid[0] + 1}: {self.time_column} {times[off_grid[0]]} is not on the "
                f"{self.metadata.frequency} grid of the training data (which runs through "
                f"{self.metadata.grid_anchor})"
            )
        return self._on_grid(nanoseconds, values, where)

    def window_on_grid(self, nanoseconds: np.ndarray, values: np.ndarray) -> Window:
        """The window ending at the last of these steps (int64 ns on the grid, increasing; NaN: not measured),
        filled as preprocessing fills gaps; a RequestError when too much of it is missing."""
        return self._on_grid(nanoseconds, values, "")

    def _on_grid(self, nanoseconds: np.ndarray, values: np.ndarray, where: str) -> Window:
        """The last rows_needed grid steps up to the last row; missing steps and cells filled as in preprocess."""
        rows = self.rows_needed
        recent = values[-rows:]
        span = (rows - 1) * self.step_ns
        if len(nanoseconds) >= rows and nanoseconds[-1] - nanoseconds[-rows] == span and not np.isnan(recent).any():
            first = len(nanoseconds) - rows + 1
            return Window(nanoseconds[-rows:], recent, np.zeros(rows, dtype=bool), np.arange(first, first + rows))
        last = int(nanoseconds[-1])
        if last - (rows - 1) * self.step_ns < _MIN_NS:
            raise RequestError(f"{where}the window starts before {_RANGE.split(' to ')[0]}, the first timestamp served")
        slot = (nanoseconds - last) // self.step_ns + (rows - 1)
        used = slot >= 0
        grid = np.full((rows, values.shape[1]), np.nan)
        grid[slot[used]] = values[used]
        row_numbers = np.zeros(rows, dtype=np.int64)
        row_numbers[slot[used]] = np.flatnonzero(used) + 1
        grid_ns = last - self.step_ns * np.arange(rows - 1, -1, -1, dtype=np.int64)
        missing = np.isnan(grid)
        if not missing.any():
            return Window(grid_ns, grid, np.zeros(rows, dtype=bool), row_numbers)
        empty = [name for name, gone in zip(self.measured_columns, missing.all(axis=0), strict=True) if gone]
        if empty or missing.mean() > MAX_MISSING_SHARE:
            detail = f"column {empty[0]!r} has no value" if empty else f"{int(missing.sum())} of {missing.size} cells"
            raise RequestError(
                f"{where}too much of the window is missing to fill: {detail} in the last {rows} steps of "
                f"{self.metadata.frequency} (at most {MAX_MISSING_SHARE:.0%} of the cells may be missing)"
            )
        steps, columns = np.nonzero(missing)
        filled = tuple(zip(steps.tolist(), columns.tolist(), strict=True))
        return Window(grid_ns, self.transform.fill(grid), missing.any(axis=1), row_numbers, filled)

    def window_from_processed(self, frame: pd.DataFrame) -> Window | None:
        """The last rows_needed rows of a processed split (scaled features) as a window on the original scale."""
        if len(frame) < self.rows_needed:
            return None
        series = processed_series(frame.iloc[-self.rows_needed :], self.metadata)
        return Window(series.nanoseconds, series.values, series.gap, np.zeros(self.rows_needed, dtype=np.int64))

    def filled_cells(self, window: Window) -> list[dict[str, str]]:
        """The cells of a window that were filled, as {"ts", "column"}."""
        if not window.filled:
            return []
        stamps = iso_times(window.nanoseconds)
        measured = self.measured_columns
        return [{"ts": stamps[step], "column": measured[column]} for step, column in window.filled]

    # ------------------------------------------------------------------ shared by a batch: the model

    def forecast(self, windows: list[Window], length: int) -> Forecasts:
        """Forecast `length` steps after each window (recursively beyond output_seq_len) in one pass per step."""
        nanoseconds = np.stack([w.nanoseconds for w in windows])
        values = np.stack([w.values for w in windows])
        bad_inputs = ~np.isfinite(self.transform.scaled(values)).all(axis=(1, 2))
        result = self._forecast_arrays(nanoseconds, values, np.stack([w.gap for w in windows]), length)
        bad_outputs = ~np.isfinite(result.values).all(axis=(1, 2))
        for index, window in enumerate(windows):
            if bad_inputs[index]:
                result.errors.append(self._input_problem(window))
            else:
                result.errors.append(self._output_problem(result, index) if bad_outputs[index] else None)
        return result

    def forecast_series(self, series: Series, chunk: int = 32_768) -> Forecasts:
        """One forecast of output_seq_len steps after every step of a series on the grid that ends a window
        (steps rows_needed-1 ... end): the batch-scoring path, one forward pass per `chunk` windows.

        The windows are strided views of the series (nothing is copied per window); `errors` stays empty:
        a window whose input or forecast is not finite has non-finite values, which the caller reports.
        """
        rows = self.rows_needed
        if len(series.nanoseconds) < rows:
            raise RequestError(f"{len(series.nanoseconds)} rows; the model needs at least {rows} for one window")
        nanoseconds = sliding_window_view(series.nanoseconds, rows)
        values = sliding_window_view(series.values, rows, axis=0).transpose(0, 2, 1)
        gap = sliding_window_view(series.gap, rows)
        parts = [
            self._forecast_arrays(
                nanoseconds[start : start + chunk],
                values[start : start + chunk],
                gap[start : start + chunk],
                self.output_seq_len,
            )
            for start in range(0, len(nanoseconds), chunk)
        ]
        return Forecasts(np.concatenate([p.values for p in parts]), np.concatenate([p.nanoseconds for p in parts]), [])

    def _forecast_arrays(self, nanoseconds: np.ndarray, values: np.ndarray, gap: np.ndarray, length: int) -> Forecasts:
        """[N, rows] times, [N, rows, measured] values and [N, rows] gap flags -> forecasts, without error checks."""
        horizon, rows = self.output_seq_len, self.rows_needed
        offsets = self.step_ns * np.arange(1, horizon + 1, dtype=np.int64)
        order = [self.target_columns.index(column) for column in self.measured_columns] if length > horizon else []
        outputs, times = [], []
        for step in range(math.ceil(length / horizon)):
            features = self.transform.matrix(nanoseconds, values, gap)[:, -self.input_seq_len :]
            future = nanoseconds[:, -1:] + offsets
            scaled = self.forecaster.predict(features, future.astype("datetime64[ns]"))
            outputs.append(scaled.astype(np.float64) * self.target_scale + self.target_center)
            times.append(future)
            if (step + 1) * horizon < length:
                nanoseconds = np.concatenate([nanoseconds, future], axis=1)[:, -rows:]
                values = np.concatenate([values, outputs[-1][:, :, order]], axis=1)[:, -rows:]
                gap = np.concatenate([gap, np.zeros(future.shape, dtype=bool)], axis=1)[:, -rows:]
        return Forecasts(np.concatenate(outputs, axis=1)[:, :length], np.concatenate(times, axis=1)[:, :length], [])

    def _input_problem(self, window: Window) -> str:
        step, column = np.argwhere(~np.isfinite(self.transform.scaled(window.values)))[0]
        row = int(window.row_numbers[step])
        return (
            f"column {self.measured_columns[column]!r}, row {row}: {window.values[step, column]:g} is too far "
            "outside the training data's range to scale (the scaled value is not finite)"
        )

    def _output_problem(self, forecasts: Forecasts, index: int) -> str:
        step, target = np.argwhere(~np.isfinite(forecasts.values[index]))[0]
        when = iso_times(forecasts.nanoseconds[index, step : step + 1])[0]
        return (
            f"step {step + 1} ({when}): the forecast of {self.target_columns[target]!r} is not finite "
            "(the window is too far outside the training data's range)"
        )

    def records(self, forecasts: Forecasts, index: int) -> list[dict[str, Any]]:
        """Window `index`'s forecast as JSON-ready rows: {"ts": ..., target: value}."""
        targets = self.target_columns
        rows = forecasts.values[index].tolist()
        return [
            {"ts": ts, **dict(zip(targets, row, strict=True))}
            for ts, row in zip(iso_times(forecasts.nanoseconds[index]), rows, strict=True)
        ]


@functools.lru_cache(maxsize=16_384)
def _parse_timestamp(value: str) -> int | None:
    """One ISO-8601 string as int64 UTC nanoseconds (naive = UTC), None when it is not one.

    Cached: a client's consecutive windows share all but one row, so most lookups are hits.
    """
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            return int(pd.to_datetime(value, utc=True, format="ISO8601").value)
        except (ValueError, OverflowError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND * 1000


def _timestamps(values: list[Any], column: str, where: str) -> np.ndarray:
    """ISO-8601 strings as int64 UTC nanoseconds; a RequestError names the first bad row."""
    out = np.empty(len(values), dtype=np.int64)
    for index, value in enumerate(values):
        nanoseconds = _parse_timestamp(value) if isinstance(value, str) else None
        if nanoseconds is None:
            problem = "is missing" if value is None else f"{value!r} is not an ISO-8601 timestamp"
            raise RequestError(f"{where}row {index + 1}: {column} {problem}")
        if not _MIN_NS <= nanoseconds <= _MAX_NS:
            raise RequestError(f"{where}row {index + 1}: {column} {value!r} is outside the range served ({_RANGE})")
        out[index] = nanoseconds
    return out


def _numbers(cells: list[Any], columns: list[str], where: str) -> np.ndarray:
    """Cells as float64 [rows, columns]: None (or NaN) is a missing cell; a non-number or ±inf is a RequestError."""
    try:
        values = np.array(cells, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        for row, line in enumerate(cells):
            for column, cell in enumerate(line):
                try:
                    float(cell if cell is not None else "nan")
                except (ValueError, TypeError, OverflowError) as exc:
                    problem = "is too large" if isinstance(exc, OverflowError) else "is not a number"
                    raise RequestError(
                        f"{where}column {columns[column]!r}, row {row + 1}: {cell!r} {problem}"
                    ) from None
        raise
    if np.isinf(values).any():
        row, column = np.argwhere(np.isinf(values))[0]
        raise RequestError(f"{where}column {columns[column]!r}, row {row + 1}: {cells[row][column]!r} is not finite")
    return values
