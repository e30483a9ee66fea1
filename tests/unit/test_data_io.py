"""Reading and validating uploads: every DataError says which column, which row, what was expected."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from flts.config import DataConfig, LimitsConfig, PipelineConfig
from flts.data.io import DataError, read_measurements, resolve_columns, split_sizes, validate_measurements

CSV = b"time,cell,down,up\n2024-01-01T00:00:00,a,1.5,2\n2024-01-01T00:02:00,a,,3\n2024-01-01T00:04:00,a,inf,4\n"


def _frame(rows: int, start: str = "2024-01-01", **extra: object) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.date_range(start, periods=rows, freq="2min", tz="UTC"),
            "down": np.arange(rows, dtype=float),
            "up": np.ones(rows),
            **extra,
        }
    )


@pytest.mark.parametrize("kind", ["bytes", "str", "path", "binary"])
def test_read_every_source_kind(tmp_path, kind: str) -> None:
    path = tmp_path / "upload.csv"
    path.write_bytes(CSV)
    source = {"bytes": CSV, "str": str(path), "path": path, "binary": io.BytesIO(CSV)}[kind]
    frame = read_measurements(source, DataConfig())
    assert list(frame.columns) == ["time", "down", "up"]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert frame["down"].isna().tolist() == [False, True, True]
    assert frame["up"].dtype == np.float64


def test_naive_times_are_utc_and_offsets_are_converted() -> None:
    data = b"time,down\n2024-01-01 00:00:00,1\n2024-01-01T03:02:00+03:00,2\n2024-01-01T00:04:00Z,3\n"
    times = read_measurements(data, DataConfig())["time"]
    assert times.tolist() == list(pd.date_range("2024-01-01", periods=3, freq="2min", tz="UTC"))


def test_a_saved_index_column_is_not_a_measurement() -> None:
    frame = read_measurements(b",time,down\n0,2024-01-01,1\n1,2024-01-02,2\n", DataConfig())
    assert list(frame.columns) == ["time", "down"]


def test_configured_columns_and_identifier() -> None:
    data = b"time,identifier,down,up,rb\n2024-01-01T00:00:00,c1,1,2,3\n"
    config = DataConfig(feature_columns=["rb", "down"], target_columns=["down"])
    frame = read_measurements(data, config)
    assert list(frame.columns) == ["time", "identifier", "rb", "down"]
    assert resolve_columns(frame, config) == (["rb", "down"], ["down"])


@pytest.mark.parametrize(
    ("data", "config", "message"),
    [
        (b"", DataConfig(), "the file is empty"),
        (b"time,down\n", DataConfig(), "header but no data rows"),
        (b"when,down\n2024-01-01,1\n", DataConfig(), "time column 'time' not found (columns present: when, down)"),
        (b"time,down\n2024-01-01,1\nyesterday,2\n", DataConfig(), "column 'time', row 2: cannot parse 'yesterday'"),
        (b"time,down\n2024-01-01,1\n,2\n", DataConfig(), "column 'time', row 2: the timestamp is missing"),
        (
            b"time,down\n2024-01-01,1\n2024-01-02,2\n2024-01-03,x7\n",
            DataConfig(),
            "column 'down', row 3: 'x7' is not a number",
        ),
        (b"time,name\n2024-01-01,a\n", DataConfig(), "no numeric measurement columns (columns present: time, name)"),
        (
            b"time,down\n2024-01-01,1\n",
            DataConfig(feature_columns=["down", "up"]),
            "feature columns missing from the data: up",
        ),
        (
            b"time,down,up\n2024-01-01,1,2\n",
            DataConfig(feature_columns=["down"], target_columns=["up"]),
            "target columns must be among the feature columns: up",
        ),
        (b'time,down\n"2024-01-01,1\n', DataConfig(), "not a readable CSV file"),
        (b"time,down\n\xff\xfe\x00,1\n", DataConfig(), "not a readable CSV file"),
    ],
)
def test_read_errors_say_what_is_wrong(data: bytes, config: DataConfig, message: str) -> None:
    with pytest.raises(DataError) as error:
        read_measurements(data, config)
    assert message in str(error.value)


def test_mostly_numeric_text_column_is_a_measurement_with_a_bad_value() -> None:
    data = b"time,down,label\n2024-01-01,1,a\n2024-01-02,n/a?,b\n2024-01-03,3,c\n"
    with pytest.raises(DataError, match=r"column 'down', row 2: 'n/a\?' is not a number"):
        read_measurements(data, DataConfig())


LIMITS = LimitsConfig(max_columns=4, max_rows=3, max_header_bytes=64, max_column_name_chars=12, max_cell_chars=32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"time,a,b,c,d\n2024-01-01,1,2,3,4\n", "5 columns; at most 4 (limits.max_columns)"),
        (b"time," + b"x" * 80 + b"\n2024-01-01,1\n", "longer than 64 bytes (limits.max_header_bytes)"),
        (b"time,down\n" + b"2024-01-01,1\n" * 4, "more than 3 rows (limits.max_rows)"),
        (b"time,averyverylongname\n2024-01-01,1\n", "at most 12 characters (limits.max_column_name_chars)"),
        (b"time,down\n2024-01-01" + b" " * 40 + b"Z,1\n", "column 'time', row 1: the value is longer than 32"),
    ],
)
def test_each_upload_limit_is_refused_with_its_name(data: bytes, message: str) -> None:
    with pytest.raises(DataError) as error:
        read_measurements(data, DataConfig(), LIMITS)
    assert message in str(error.value)


@pytest.mark.parametrize("name", ["rsrp(dBm)", "util%", "-lead", "a/b"])
def test_column_names_mlflow_cannot_log_are_refused_at_upload(name: str) -> None:
    with pytest.raises(DataError, match=r"becomes an MLflow metric key") as error:
        read_measurements(f"time,{name}\n2024-01-01,1\n".encode(), DataConfig())
    assert repr(name) in str(error.value)


@pytest.mark.parametrize("name", ["is_gap", "hour_sin", "dow_cos", "down_lag3"])
def test_a_measured_column_named_like_a_generated_feature_is_refused(name: str) -> None:
    with pytest.raises(DataError, match=rf"column '{name}': the name is reserved"):
        read_measurements(f"time,{name}\n2024-01-01,1\n".encode(), DataConfig())


def test_names_with_spaces_dots_and_dashes_are_accepted() -> None:
    frame = read_measurements(b"time,DL bitrate,rb.up,mcs-down\n2024-01-01,1,2,3\n", DataConfig())
    assert list(frame.columns) == ["time", "DL bitrate", "rb.up", "mcs-down"]


def test_split_sizes_are_chronological_and_complete() -> None:
    split = PipelineConfig().preprocessing.split
    assert split_sizes(1000, split, separate_test=False) == (0, 700, 150, 150)
    assert split_sizes(1000, split, separate_test=True) == (0, 850, 150, 0)
    assert split_sizes(1000, split, False, max_train_rows=100, max_test_rows=40) == (750, 82, 18, 40)


def test_validate_accepts_enough_rows_and_says_how_many_are_needed() -> None:
    config = PipelineConfig()
    validate_measurements(_frame(71), config)
    with pytest.raises(DataError) as error:
        validate_measurements(_frame(70), config)
    assert "the file has 70 distinct timestamps; at least 71 are needed" in str(error.value)
    assert "input_seq_len 10 + output_seq_len 1" in str(error.value)


def test_validate_counts_lag_rows() -> None:
    config = PipelineConfig.model_validate({"preprocessing": {"lag_features": [30]}})
    with pytest.raises(DataError, match="at least 101 are needed"):
        validate_measurements(_frame(80), config)


@pytest.mark.parametrize(
    ("frame", "test", "message"),
    [
        (_frame(200, identifier=["a", "b"] * 100), None, "the file holds 2 series in column 'identifier'"),
        (_frame(200, rb=np.nan), None, "the file: columns without a single value: rb"),
        (_frame(200), _frame(30, start="2024-01-01 06:00"), "the test file must start after the training data"),
        (_frame(200), _frame(5, start="2024-02-01"), "the test file has 5 distinct timestamps; at least 11"),
    ],
)
def test_validate_errors(frame: pd.DataFrame, test: pd.DataFrame | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_measurements(frame, PipelineConfig(), test)


def test_validate_rejects_sampling_that_leaves_no_window() -> None:
    config = PipelineConfig.model_validate({"preprocessing": {"sample": {"max_train_rows": 15}}})
    with pytest.raises(DataError, match="sampling limits leave too few rows"):
        validate_measurements(_frame(1000), config)


def test_a_header_with_a_lone_carriage_return_is_a_data_error_not_a_crash():
    with pytest.raises(DataError, match="header line is not readable CSV"):
        read_measurements(b"time,\r0\n2024-01-01,1\n", DataConfig())
