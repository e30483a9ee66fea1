"""Reading and validating uploaded measurement CSVs (shared by the gateway and preprocess).

The gateway rejects a bad upload with the same message preprocess would fail with, so both call
these functions; every DataError names the column, the row and what was expected. Rows are
counted from 1 = the first data row under the header.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from pandas.api.types import is_datetime64_any_dtype, is_numeric_dtype

from flts.config import DataConfig, LimitsConfig, PipelineConfig, SplitConfig
from flts.data.features import generated_name

# A text column counts as a measurement when at least this share of its values are numbers;
# below it, it is taken as a label (e.g. a cell name) and ignored.
NUMERIC_SHARE = 0.5
# pandas' name for a column without a header: a saved row index, never a measurement.
UNNAMED_PREFIX = "Unnamed: "
COLUMN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\- ]*")


class DataError(ValueError):
    """The data (not the code) is wrong; the message says where and what was expected."""


class TooManyRows(DataError):
    """More rows than the limit: found while parsing stops one row past it, so a huge file is never read whole."""


def _first_row(mask: np.ndarray | pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


def parse_times(values: pd.Series, column: str) -> pd.Series:
    """Timestamps as datetime64[ns, UTC] (same index); naive ones are taken as UTC. Numbers are rejected."""
    if is_datetime64_any_dtype(values):
        index = pd.DatetimeIndex(values)
        index = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    else:
        index = pd.to_datetime(values.to_numpy(dtype=object), utc=True, errors="coerce", format="ISO8601")
        if index.isna().any():
            mixed = pd.to_datetime(values.astype("string"), utc=True, errors="coerce", format="mixed")
            index = pd.DatetimeIndex(mixed)
    index = index.as_unit("ns")
    bad = index.isna()
    if bad.any():
        row = _first_row(bad)
        raw = values.iloc[row - 1]
        if pd.isna(raw):
            raise DataError(f"column {column!r}, row {row}: the timestamp is missing")
        raise DataError(
            f"column {column!r}, row {row}: cannot parse {raw!r} as a timestamp "
            "(expected ISO-8601, e.g. 2024-01-01T00:02:00)"
        )
    return pd.Series(index, index=values.index, name=values.name)


def to_numeric_column(values: pd.Series, column: str) -> pd.Series:
    """The column as float64 (±inf becomes NaN: a missing value); a non-number raises DataError."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = (numbers.isna() & values.notna()).to_numpy()
    if bad.any():
        row = _first_row(bad)
        raise DataError(f"column {column!r}, row {row}: {values.iloc[row - 1]!r} is not a number")
    return numbers.where(np.isfinite(numbers))


def numeric_values(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as float64 [rows, columns] (±inf becomes NaN); a non-number raises DataError."""
    block = frame[columns]
    if all(is_numeric_dtype(dtype) for dtype in block.dtypes):
        values = block.to_numpy(dtype=np.float64, copy=True)
        values[~np.isfinite(values)] = np.nan
        return values
    return np.column_stack([to_numeric_column(block[name], name).to_numpy() for name in columns])


def _looks_numeric(values: pd.Series) -> bool:
    if is_numeric_dtype(values) and not is_datetime64_any_dtype(values):
        return True
    present = values.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() >= NUMERIC_SHARE


def resolve_columns(frame: pd.DataFrame, config: DataConfig) -> tuple[list[str], list[str]]:
    """(feature columns, target columns): configured, or every numeric column but time/identifier."""
    reserved = {config.time_column, config.identifier_column}
    if config.feature_columns is None:
        features = [
            str(name)
            for name in frame.columns
            if name not in reserved and not str(name).startswith(UNNAMED_PREFIX) and _looks_numeric(frame[name])
        ]
        if not features:
            raise DataError(f"no numeric measurement columns (columns present: {', '.join(map(str, frame.columns))})")
    else:
        features = list(config.feature_columns)
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise DataError(
                f"feature columns missing from the data: {', '.join(missing)} "
                f"(columns present: {', '.join(map(str, frame.columns))})"
            )
    if config.target_columns is None:
        return features, features
    targets = list(config.target_columns)
    outside = [name for name in targets if name not in features]
    if outside:
        raise DataError(
            f"target columns must be among the feature columns: {', '.join(outside)} (features: {', '.join(features)})"
        )
    return features, targets


def read_measurements(
    source: bytes | str | Path | BinaryIO, config: DataConfig, limits: LimitsConfig | None = None
) -> pd.DataFrame:
    """Parse a CSV into time (UTC) [+ identifier] + the selected numeric columns (float64).

    ``str`` is a file path. Raises DataError for anything that is not a usable measurement table, or
    that exceeds ``limits`` (checked before the whole file is parsed: header, columns, then rows).
    """
    limits = limits or LimitsConfig()
    if isinstance(source, str | Path):
        with Path(source).open("rb") as handle:
            return read_measurements(handle, config, limits)
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    _check_header(handle, limits)
    text_columns = {config.time_column: "string"}
    if config.identifier_column:
        text_columns[config.identifier_column] = "string"
    try:
        frame = pd.read_csv(
            handle, dtype=text_columns, skipinitialspace=True, low_memory=False, nrows=limits.max_rows + 1
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError("the file is empty (expected a CSV header and data rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable CSV file: {exc}") from exc
    if len(frame) > limits.max_rows:
        raise TooManyRows(f"the file has more than {limits.max_rows} rows (limits.max_rows)")
    frame.columns = [str(name).strip() for name in frame.columns]
    if config.time_column not in frame.columns:
        raise DataError(f"time column {config.time_column!r} not found (columns present: {', '.join(frame.columns)})")
    if frame.empty:
        raise DataError("the file has a header but no data rows")
    features, _ = resolve_columns(frame, config)
    check_column_names(features, limits)
    for name in text_columns:
        if name in frame.columns:
            _check_cell_lengths(frame[name], name, limits)
    columns = {config.time_column: parse_times(frame[config.time_column], config.time_column)}
    if config.identifier_column and config.identifier_column in frame.columns:
        columns[config.identifier_column] = frame[config.identifier_column]
    columns.update({name: to_numeric_column(frame[name], name) for name in features})
    return pd.DataFrame(columns)


def _check_header(handle: BinaryIO, limits: LimitsConfig) -> None:
    """Refuse an over-long header or too many columns from the first line alone, then rewind."""
    start = handle.tell()
    header = handle.readline(limits.max_header_bytes + 1)
    handle.seek(start)
    if len(header) > limits.max_header_bytes and not header.endswith(b"\n"):
        raise DataError(f"the header line is longer than {limits.max_header_bytes} bytes (limits.max_header_bytes)")
    try:
        columns = len(next(csv.reader([header.decode("utf-8", errors="replace")]), []))
    except csv.Error as exc:  # e.g. a lone carriage return inside the header line
        raise DataError(f"the header line is not readable CSV: {exc}") from exc
    if columns > limits.max_columns:
        raise DataError(f"the file has {columns} columns; at most {limits.max_columns} (limits.max_columns)")


def check_column_names(columns: list[str], limits: LimitsConfig) -> None:
    """Measured columns become metric keys (MLflow) and features beside the generated ones."""
    for name in columns:
        if len(name) > limits.max_column_name_chars:
            raise DataError(
                f"column {name[:40]!r}...: names are at most {limits.max_column_name_chars} characters"
                " (limits.max_column_name_chars)"
            )
        if not COLUMN_NAME.fullmatch(name):
            raise DataError(
                f"column {name!r}: a measured column's name may hold letters, digits, '_', '-', '.' and spaces "
                "only, and starts with a letter, digit or '_' (it becomes an MLflow metric key)"
            )
        if generated_name(name):
            raise DataError(
                f"column {name!r}: the name is reserved for a feature preprocessing generates; rename the column"
            )


def _check_cell_lengths(values: pd.Series, column: str, limits: LimitsConfig) -> None:
    too_long = (values.str.len() > limits.max_cell_chars).fillna(False).to_numpy(dtype=bool)
    if too_long.any():
        row = _first_row(too_long)
        raise DataError(
            f"column {column!r}, row {row}: the value is longer than {limits.max_cell_chars} characters"
            " (limits.max_cell_chars)"
        )


def split_sizes(
    rows: int,
    split: SplitConfig,
    separate_test: bool,
    max_train_rows: int | None = None,
    max_test_rows: int | None = None,
) -> tuple[int, int, int, int]:
    """(skipped, train, validation, test) row counts of a series of ``rows`` consecutive rows.

    Chronological: [skipped | train | validation | test | unused]. With a separate test file the
    series holds no test rows. Sampling keeps the most recent ``max_train_rows`` of train+validation
    and the first ``max_test_rows`` of test (the part right after the training period).
    """
    test = 0 if separate_test else round(rows * split.test_fraction)
    before_test = rows - test
    validation_share = split.validation_fraction / (1.0 if separate_test else 1.0 - split.test_fraction)
    kept = before_test if max_train_rows is None else min(before_test, max_train_rows)
    validation = round(kept * validation_share)
    if max_test_rows is not None:
        test = min(test, max_test_rows)
    return before_test - kept, kept - validation, validation, test


def _required_rows(config: PipelineConfig, separate_test: bool) -> tuple[int, int] | None:
    """(rows the train file needs, rows a test file needs), or None when sampling makes it impossible."""
    window = config.windows.input_seq_len + config.windows.output_seq_len
    lag = max(config.preprocessing.lag_features, default=0)
    sample = config.preprocessing.sample
    split = config.preprocessing.split
    if sample.max_test_rows is not None and sample.max_test_rows < window:
        return None
    test_fraction = 0.0 if separate_test else split.test_fraction
    shares = [split.validation_fraction, 1.0 - split.validation_fraction - test_fraction, test_fraction or 1.0]
    smallest = min(shares)
    for rows in range(2 * window, math.ceil(window / smallest) + 2 * window + 10):
        _, train, validation, test = split_sizes(
            rows, split, separate_test, sample.max_train_rows, sample.max_test_rows
        )
        if min(train, validation) >= window and (separate_test or test >= window):
            return lag + rows, lag + window
    return None


def validate_measurements(frame: pd.DataFrame, config: PipelineConfig, test: pd.DataFrame | None = None) -> None:
    """Reject data preprocess could not turn into train/validation/test windows (DataError).

    ``frame`` (and ``test``, a separately uploaded test file) as returned by read_measurements.
    """
    data = config.data
    time_column = data.time_column
    for role, part in (("the file", frame), ("the test file", test)):
        if part is None:
            continue
        if data.identifier_column and data.identifier_column in part.columns:
            identifiers = part[data.identifier_column].dropna().unique()
            if len(identifiers) > 1:
                raise DataError(
                    f"{role} holds {len(identifiers)} series in column {data.identifier_column!r} "
                    f"({', '.join(map(str, identifiers[:5]))}, ...); upload one series per file"
                )
        features, _ = resolve_columns(part, data)
        empty = [name for name in features if part[name].isna().all()]
        if empty:
            raise DataError(f"{role}: columns without a single value: {', '.join(empty)}")
    separate_test = test is not None
    required = _required_rows(config, separate_test)
    window, settings = config.windows, config.preprocessing
    what = (
        f"windows of input_seq_len {window.input_seq_len} + output_seq_len {window.output_seq_len} rows"
        f", lag_features {settings.lag_features}, validation_fraction {settings.split.validation_fraction}"
        f", test_fraction {0 if separate_test else settings.split.test_fraction}"
        f", sample {settings.sample.model_dump()}"
    )
    if required is None:
        raise DataError(f"the sampling limits leave too few rows for one window of each split ({what})")
    train_needed, test_needed = required
    rows = frame[time_column].nunique()
    if rows < train_needed:
        splits = "train and validation" if separate_test else "train, validation and test"
        raise DataError(
            f"the file has {rows} distinct timestamps; at least {train_needed} are needed to give "
            f"{splits} one window each ({what})"
        )
    if test is not None:
        test_rows = test[time_column].nunique()
        if test_rows < test_needed:
            raise DataError(
                f"the test file has {test_rows} distinct timestamps; at least {test_needed} are needed ({what})"
            )
        if test[time_column].min() <= frame[time_column].max():
            raise DataError(
                f"the test file must start after the training data ends: it starts at "
                f"{test[time_column].min()}, the training data ends at {frame[time_column].max()}"
            )
