"""Every data decision, made once: grid, gaps, outliers, features, split, sampling, scaling.

``preprocess`` fits everything on the train split and records it in the lineage's metadata;
``FeatureTransform`` rebuilds that fitted transform from it, and serving (``flts.predict``) applies
it to the rows sent to /predict, so a served model sees what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from flts.config import OutlierConfig, PipelineConfig, PreprocessingConfig
from flts.data.features import GAP_COLUMN, TIME_FEATURE_COLUMNS, lag_column
from flts.data.io import (
    DataError,
    numeric_values,
    parse_times,
    resolve_columns,
    split_sizes,
    validate_measurements,
)
from flts.data.metadata import METADATA_VERSION, Imputation, PreprocessingMetadata
from flts.data.scaler import Scaler

SPLITS = ("train", "validation", "test")
_NS_PER_DAY = 86_400 * 10**9
_STEP_UNITS_NS = (1, 10**3, 10**6, 10**7, 10**8, 10**9, 10**10, 6 * 10**10, 6 * 10**11, 36 * 10**11, _NS_PER_DAY)
# A grid with more missing rows than this (and than present ones) means a wrong frequency.
_MAX_MISSING_ROWS = 1000


@dataclass
class ProcessedDataset:
    train: pd.DataFrame  # time column + feature columns, float32 scaled; chronological
    validation: pd.DataFrame
    test: pd.DataFrame
    metadata: PreprocessingMetadata  # everything needed to replay the transform


@dataclass(frozen=True)
class _Series:
    """One file on its regular grid, before filling."""

    times: pd.DatetimeIndex
    values: np.ndarray  # float64 [rows, measured columns]; NaN = missing
    gap: np.ndarray  # bool [rows]: the row was missing from the file or had a missing value
    duplicates: int


def _time_features(nanoseconds: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """From int64 UTC nanoseconds: numpy only, so serving a window costs microseconds."""
    day_fraction = (nanoseconds % _NS_PER_DAY) / _NS_PER_DAY
    weekday = (nanoseconds // _NS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    angles = {"hour": 2 * np.pi * day_fraction, "day_of_week": 2 * np.pi * (weekday + day_fraction) / 7}
    columns: dict[str, np.ndarray] = {}
    for name in names:
        sin_name, cos_name = TIME_FEATURE_COLUMNS[name]
        columns[sin_name] = np.sin(angles[name]).astype(np.float32)
        columns[cos_name] = np.cos(angles[name]).astype(np.float32)
    return columns


def _step(times: pd.Series, configured: str | None) -> pd.Timedelta:
    """The configured frequency, else the step most rows agree on, else the median step.

    The median of a jittered clock (e.g. 119 s, 121 s, ...) is rounded to the coarsest clock unit
    below a sixth of it, so 2-minute data with a few seconds of jitter still gets "2min".
    """
    if configured is not None:
        try:
            return pd.Timedelta(to_offset(configured))
        except ValueError as exc:
            raise DataError(
                f"preprocessing.frequency {configured!r} is not a fixed pandas offset alias (e.g. '2min')"
            ) from exc
    steps = np.diff(np.unique(pd.DatetimeIndex(times).asi8))
    if len(steps) == 0:
        raise DataError("cannot infer the frequency: fewer than two distinct timestamps")
    values, counts = np.unique(steps, return_counts=True)
    if 2 * counts.max() >= len(steps):
        return pd.Timedelta(int(values[counts.argmax()]), unit="ns")
    median = float(np.median(steps))
    unit = max(unit for unit in _STEP_UNITS_NS if unit <= max(median / 6, 1))
    return pd.Timedelta(round(median / unit) * unit, unit="ns")


def _regularise(
    raw: pd.DataFrame, time_column: str, columns: list[str], step: pd.Timedelta, anchor: pd.Timestamp
) -> _Series:
    """Snap (parsed) timestamps to the grid through ``anchor``, keep the last of duplicates, reindex."""
    values = numeric_values(raw, columns)
    step_ns = step.value
    offsets = (pd.DatetimeIndex(raw[time_column]) - anchor).asi8
    positions = np.floor_divide(offsets + step_ns // 2, step_ns)
    order = np.argsort(positions, kind="stable")
    positions, values = positions[order], values[order]
    last = np.append(positions[1:] != positions[:-1], True)
    positions, values = positions[last], values[last]
    first = positions[0]
    rows = int(positions[-1] - first) + 1
    missing = rows - len(positions)
    if missing > max(len(positions), _MAX_MISSING_ROWS):
        raise DataError(
            f"the timestamps span {rows} steps of {to_offset(step).freqstr} but only {len(positions)} "
            "are present: is the frequency right?"
        )
    grid = np.full((rows, len(columns)), np.nan)
    grid[positions - first] = values
    present = np.zeros(rows, dtype=bool)
    present[positions - first] = True
    grid_times = pd.date_range(anchor + step * int(first), periods=rows, freq=step)
    gap = ~present | np.isnan(grid).any(axis=1)
    return _Series(grid_times, grid, gap, int((~last).sum()))


def _long_gaps(missing: np.ndarray, max_steps: int) -> np.ndarray:
    """Cells in runs of more than ``max_steps`` consecutive missing values (per column)."""
    rows, columns = missing.shape
    run = np.cumsum(~missing, axis=0) + np.arange(columns) * (rows + 1)
    lengths = np.bincount(run[missing], minlength=columns * (rows + 1))
    return missing & (lengths[run] > max_steps)


def _fill(values: np.ndarray, config: PreprocessingConfig, fill_values: np.ndarray) -> np.ndarray:
    """Impute per config, then carry edge values; linear does not bridge gaps longer than the limit."""
    frame = pd.DataFrame(values)
    missing = np.isnan(values)
    if config.imputation == "linear":
        interpolated = frame.interpolate(method="linear", limit_area="inside")
        frame = interpolated.mask(_long_gaps(missing, config.max_gap_fill_steps), frame.ffill())
    elif config.imputation == "ffill":
        frame = frame.ffill()
    else:
        frame = pd.DataFrame(np.where(missing, fill_values, values))
    return frame.ffill().bfill().to_numpy()


def _clip_bounds(values: np.ndarray, config: OutlierConfig) -> tuple[np.ndarray, np.ndarray] | None:
    if config.method == "none":
        return None
    if config.method == "iqr":
        q25, q75 = np.percentile(values, [25, 75], axis=0)
        return q25 - config.iqr_k * (q75 - q25), q75 + config.iqr_k * (q75 - q25)
    low, high = np.percentile(values, [config.lower_percentile, config.upper_percentile], axis=0)
    return low, high


@dataclass(frozen=True)
class FeatureTransform:
    """The one transform shared by training and serving: clip, scale, lag, time features, is_gap.

    Its parameters are read from the metadata once (serving keeps one per model); every array may
    carry leading batch axes: nanoseconds [..., rows], values [..., rows, measured], gap [..., rows].
    """

    measured: tuple[str, ...]
    targets: tuple[str, ...]
    feature_columns: tuple[str, ...]
    clip: tuple[np.ndarray, np.ndarray] | None
    center: np.ndarray
    scale: np.ndarray
    lags: tuple[int, ...]
    time_features: tuple[str, ...]
    imputation: PreprocessingConfig
    fill_values: np.ndarray

    @classmethod
    def from_metadata(cls, metadata: PreprocessingMetadata) -> FeatureTransform:
        measured = list(metadata.measured_columns)
        clip = None
        if metadata.clip is not None:
            bounds = np.array([metadata.clip[name] for name in measured], dtype=np.float64)
            clip = (bounds[:, 0], bounds[:, 1])
        scaler = metadata.fitted_scaler  # fitted on measured, in order
        fill_values = metadata.imputation.fill_values or {}
        return cls(
            measured=tuple(measured),
            targets=tuple(metadata.target_columns),
            feature_columns=tuple(metadata.feature_columns),
            clip=clip,
            center=np.asarray(scaler.center, dtype=np.float64),
            scale=np.asarray(scaler.scale, dtype=np.float64),
            lags=tuple(metadata.lag_features),
            time_features=tuple(metadata.time_features),
            imputation=metadata.config.preprocessing,
            fill_values=np.array([fill_values.get(name, 0.0) for name in measured], dtype=np.float64),
        )

    @property
    def skip(self) -> int:
        """Rows at the start that only feed the lag features."""
        return max(self.lags, default=0)

    def scaled(self, values: np.ndarray) -> np.ndarray:
        """Measured values (last axis in metadata order) clipped and scaled, as float32."""
        if self.clip is not None:
            values = np.clip(values, *self.clip)
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: serving refuses it by name
            return ((np.asarray(values, dtype=np.float64) - self.center) / self.scale).astype(np.float32)

    def fill(self, values: np.ndarray) -> np.ndarray:
        """Missing (NaN) cells of one series on its grid [rows, measured], filled as preprocess fills a split."""
        return _fill(values, self.imputation, self.fill_values)

    def columns(self, nanoseconds: np.ndarray, values: np.ndarray, gap: np.ndarray) -> dict[str, np.ndarray]:
        scaled = self.scaled(values)
        columns = {name: scaled[..., index] for index, name in enumerate(self.measured)}
        for target in self.targets:
            for lag in self.lags:
                lagged = np.full(scaled.shape[:-1], np.nan, dtype=np.float32)
                lagged[..., lag:] = columns[target][..., :-lag]
                columns[lag_column(target, lag)] = lagged
        columns.update(_time_features(nanoseconds, list(self.time_features)))
        columns[GAP_COLUMN] = np.asarray(gap).astype(np.float32)
        return columns

    def matrix(self, nanoseconds: np.ndarray, values: np.ndarray, gap: np.ndarray) -> np.ndarray:
        """float32 [..., rows - skip, features] in metadata order: the model's input rows."""
        columns = self.columns(nanoseconds, values, gap)
        return np.stack([columns[name][..., self.skip :] for name in self.feature_columns], axis=-1)


def _features(
    times: pd.DatetimeIndex, values: np.ndarray, gap: np.ndarray, metadata: PreprocessingMetadata, skip: int = 0
) -> pd.DataFrame:
    """The training-side frame: time column + feature columns; the first ``skip`` rows only feed the lags."""
    columns = FeatureTransform.from_metadata(metadata).columns(
        pd.DatetimeIndex(times).tz_localize(None).asi8, values, gap
    )
    return pd.DataFrame(
        {
            metadata.time_column: times[skip:],
            **{name: columns[name][skip:] for name in metadata.feature_columns},
        }
    )


def _parsed(raw: pd.DataFrame, time_column: str) -> pd.DataFrame:
    if time_column not in raw.columns:
        raise DataError(f"time column {time_column!r} not found (columns: {', '.join(map(str, raw.columns))})")
    return raw.assign(**{time_column: parse_times(raw[time_column], time_column)})


def _lags(config: PreprocessingConfig) -> list[int]:
    if any(lag < 1 for lag in config.lag_features):
        raise DataError(f"preprocessing.lag_features must be positive step counts: {config.lag_features}")
    return sorted(set(config.lag_features))


def _time_range(frame: pd.DataFrame, time_column: str) -> dict[str, str | None]:
    if frame.empty:
        return {"first": None, "last": None}
    return {"first": frame[time_column].iloc[0].isoformat(), "last": frame[time_column].iloc[-1].isoformat()}


def _split_bounds(
    train_rows: int, test_file_rows: int | None, skip: int, settings: PreprocessingConfig
) -> dict[str, tuple[int, int]]:
    """Row ranges of each split: the first ``skip`` rows of a file only feed the lag features."""
    sample = settings.sample
    skipped, n_train, n_validation, n_test = split_sizes(
        train_rows - skip, settings.split, test_file_rows is not None, sample.max_train_rows, sample.max_test_rows
    )
    start = skip + skipped
    validation_end = start + n_train + n_validation
    if test_file_rows is None:
        test = (validation_end, validation_end + n_test)
    else:
        usable = test_file_rows - skip
        test = (skip, skip + min(usable, sample.max_test_rows or usable))
    return {"train": (start, start + n_train), "validation": (start + n_train, validation_end), "test": test}


def preprocess(raw_train: pd.DataFrame, raw_test: pd.DataFrame | None, config: PipelineConfig) -> ProcessedDataset:
    """Raw measurements -> scaled, featurised, chronological train/validation/test splits + metadata.

    A given ``raw_test`` is the test set and ``raw_train`` is split into train/validation only.
    Every statistic (mean fill, clip bounds, scaler) is fitted on the train split alone.
    """
    data, settings = config.data, config.preprocessing
    time_column = data.time_column
    lags = _lags(settings)
    train_raw = _parsed(raw_train, time_column)
    test_raw = None if raw_test is None else _parsed(raw_test, time_column)
    measured, targets = resolve_columns(train_raw, data)
    if test_raw is not None:
        resolve_columns(test_raw, data.model_copy(update={"feature_columns": measured}))
    validate_measurements(train_raw, config, test_raw)

    step = _step(train_raw[time_column], settings.frequency)
    anchor = train_raw[time_column].min()
    series = {"train": _regularise(train_raw, time_column, measured, step, anchor)}
    if test_raw is not None:
        series["test"] = _regularise(test_raw, time_column, measured, step, anchor)

    skip = max(lags, default=0)
    bounds = _split_bounds(
        len(series["train"].times), None if test_raw is None else len(series["test"].times), skip, settings
    )
    train_slice = slice(*bounds["train"])
    observed_means = pd.DataFrame(series["train"].values[train_slice]).mean().to_numpy()
    means = np.where(np.isfinite(observed_means), observed_means, 0.0)
    fill_values = np.zeros(len(measured)) if settings.imputation == "zero" else means
    filled = {name: _fill(part.values, settings, fill_values) for name, part in series.items()}
    clip = _clip_bounds(filled["train"][train_slice], settings.outliers)
    fit_values = filled["train"][train_slice] if clip is None else np.clip(filled["train"][train_slice], *clip)
    scaler = Scaler.fit(pd.DataFrame(fit_values, columns=measured), measured, settings.scaler)

    lag_columns = [lag_column(target, lag) for target in targets for lag in lags]
    time_columns = [name for feature in settings.time_features for name in TIME_FEATURE_COLUMNS[feature]]
    metadata = PreprocessingMetadata(
        version=METADATA_VERSION,
        time_column=time_column,
        identifier=_identifier(train_raw, data.identifier_column),
        frequency=to_offset(step).freqstr,
        grid_anchor=anchor.isoformat(),
        measured_columns=measured,
        target_columns=targets,
        lag_columns=lag_columns,
        time_feature_columns=time_columns,
        gap_column=GAP_COLUMN,
        feature_columns=[*measured, *lag_columns, *time_columns, GAP_COLUMN],
        scaler=scaler.to_dict(),
        clip=None if clip is None else dict(zip(measured, np.column_stack(clip).tolist(), strict=True)),
        time_features=list(settings.time_features),
        lag_features=lags,
        imputation=Imputation(
            method=settings.imputation,
            max_gap_fill_steps=settings.max_gap_fill_steps,
            fill_values=(
                dict(zip(measured, map(float, fill_values), strict=True))
                if settings.imputation in ("mean", "zero")
                else None
            ),
        ),
        test_source="split" if test_raw is None else "file",
        input_rows={
            name: len(frame) for name, frame in (("train", train_raw), ("test", test_raw)) if frame is not None
        },
        gap_rows_filled=int(sum(part.gap.sum() for part in series.values())),
        duplicates_dropped=sum(part.duplicates for part in series.values()),
        config=config,
    )
    featured = {name: _features(part.times, filled[name], part.gap, metadata) for name, part in series.items()}
    source = {"train": "train", "validation": "train", "test": "test" if test_raw is not None else "train"}
    splits = {name: featured[source[name]].iloc[slice(*bounds[name])].reset_index(drop=True) for name in SPLITS}
    metadata = metadata.model_copy(
        update={
            "rows": {name: len(frame) for name, frame in splits.items()},
            "time_range": {name: _time_range(frame, time_column) for name, frame in splits.items()},
        }
    )
    return ProcessedDataset(splits["train"], splits["validation"], splits["test"], metadata)


def _identifier(frame: pd.DataFrame, column: str | None) -> str | None:
    if column is None or column not in frame.columns:
        return None
    values = frame[column].dropna().unique()
    return str(values[0]) if len(values) == 1 else None


def _check_rows(raw: pd.DataFrame, metadata: PreprocessingMetadata) -> tuple[str, list[str]]:
    """The time column and measured columns a model reads; a DataError when raw lacks any or has no rows."""
    time_column, measured = metadata.time_column, metadata.measured_columns
    missing = [name for name in [time_column, *measured] if name not in raw.columns]
    if missing:
        raise DataError(f"missing columns: {', '.join(missing)} (expected {time_column} and {', '.join(measured)})")
    if raw.empty:
        raise DataError("no rows to forecast from")
    return time_column, measured


def prepare_for_inference(raw: pd.DataFrame, metadata: PreprocessingMetadata) -> pd.DataFrame:
    """Raw recent rows -> time column + feature columns (metadata order, float32), as in training.

    Unlike preprocess it fills nothing: rows must be consecutive steps on the training grid with
    every measured column present and finite. With lag features the first max(lag) rows only feed
    the lags and are not returned.
    """
    time_column, measured = _check_rows(raw, metadata)
    rows = raw.reset_index(drop=True)
    nanoseconds = pd.DatetimeIndex(parse_times(rows[time_column], time_column)).asi8
    values = numeric_values(rows, measured)
    order = np.argsort(nanoseconds, kind="stable")
    matrix = inference_features(nanoseconds[order], values[order], metadata, row_numbers=order)
    skip = max(metadata.lag_features, default=0)
    frame = pd.DataFrame(matrix, columns=metadata.feature_columns)
    frame.insert(0, time_column, pd.to_datetime(nanoseconds[order][skip:], utc=True))
    return frame


def on_training_grid(raw: pd.DataFrame, metadata: PreprocessingMetadata) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw rows (as read_measurements returns them) -> the series on the training grid, filled as preprocess
    fills a split: int64 UTC nanoseconds [steps], float64 measured values [steps, measured], is_gap [steps]."""
    time_column, measured = _check_rows(raw, metadata)
    parsed = _parsed(raw, time_column)
    step = pd.Timedelta(to_offset(metadata.frequency))
    series = _regularise(parsed, time_column, measured, step, pd.Timestamp(metadata.grid_anchor))
    empty = [name for name, gone in zip(measured, np.isnan(series.values).all(axis=0), strict=True) if gone]
    if empty:
        raise DataError(f"columns without a single value: {', '.join(empty)}")
    filled = FeatureTransform.from_metadata(metadata).fill(series.values)
    return series.times.as_unit("ns").asi8.copy(), filled, series.gap


def inference_features(
    nanoseconds: np.ndarray,
    values: np.ndarray,
    metadata: PreprocessingMetadata,
    row_numbers: np.ndarray | None = None,
) -> np.ndarray:
    """Rows sorted by time (int64 UTC ns, float64 measured values) -> float32 [rows - max(lag), features].

    Checks what serving must refuse: missing or non-finite values, repeated timestamps, timestamps off
    the training grid or not consecutive, too few rows for the lags. ``row_numbers`` maps the rows back
    to the caller's order for the messages.
    """
    measured = metadata.measured_columns
    rows = np.arange(len(nanoseconds)) if row_numbers is None else row_numbers
    _check_finite(values, measured, rows)
    times = pd.to_datetime(nanoseconds, utc=True)
    steps = np.diff(nanoseconds)
    if (steps == 0).any():
        first = int(np.flatnonzero(steps == 0)[0])
        raise DataError(
            f"timestamp {times[first].isoformat()} appears more than once "
            f"(rows {rows[first] + 1}, {rows[first + 1] + 1})"
        )
    frequency = metadata.frequency
    step = pd.Timedelta(to_offset(frequency)).value
    off_grid = np.flatnonzero((nanoseconds - pd.Timestamp(metadata.grid_anchor).value) % step)
    if len(off_grid):
        raise DataError(
            f"timestamp {times[off_grid[0]].isoformat()} is not on the {frequency} grid of the training data "
            f"(which runs through {metadata.grid_anchor})"
        )
    jumps = np.flatnonzero(steps != step)
    if len(jumps):
        raise DataError(
            f"rows must be consecutive {frequency} steps: {times[jumps[0]].isoformat()} is followed by "
            f"{times[jumps[0] + 1].isoformat()}"
        )
    skip = max(metadata.lag_features, default=0)
    if len(times) <= skip:
        input_seq_len = metadata.config.windows.input_seq_len
        raise DataError(
            f"got {len(times)} rows; with lag_features {metadata.lag_features} the first {skip} rows only feed "
            f"the lags: send {skip} extra rows before the window ({skip + input_seq_len} rows for one window)"
        )
    return FeatureTransform.from_metadata(metadata).matrix(nanoseconds, values, np.zeros(len(nanoseconds), dtype=bool))


def _check_finite(values: np.ndarray, measured: list[str], rows: np.ndarray) -> None:
    bad_rows, bad_columns = np.nonzero(~np.isfinite(values))
    if len(bad_rows):
        raise DataError(
            f"column {measured[bad_columns[0]]!r}, row {rows[bad_rows[0]] + 1}: value is missing or not finite "
            "(NaN/inf)"
        )
