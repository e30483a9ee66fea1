"""The bundled dataset generator: deterministic, the documented schema, and only intended defects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flts.config import DataConfig
from flts.data.generate import MEASURED_COLUMNS, generate_lte_dataset, write_dataset
from flts.data.io import read_measurements

COLUMNS = ["time", *MEASURED_COLUMNS]


def test_same_seed_same_data_and_other_seed_other_data() -> None:
    first = generate_lte_dataset(train_rows=3000, test_rows=500, seed=3)
    again = generate_lte_dataset(train_rows=3000, test_rows=500, seed=3)
    other = generate_lte_dataset(train_rows=3000, test_rows=500, seed=4)
    for left, right in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(left, right)
    assert not first[0].equals(other[0])


def test_schema_row_counts_and_timeline() -> None:
    train, test = generate_lte_dataset(train_rows=3000, test_rows=500, start="2024-03-04")
    assert list(train.columns) == COLUMNS
    assert list(test.columns) == COLUMNS
    assert (len(train), len(test)) == (3000, 500)
    train_times = pd.to_datetime(train["time"], format="ISO8601")
    test_times = pd.to_datetime(test["time"], format="ISO8601")
    assert train_times.iloc[0] == pd.Timestamp("2024-03-04")
    assert train_times.is_monotonic_increasing
    assert test_times.iloc[0] - train_times.iloc[-1] == pd.Timedelta("2min")
    assert (test_times.diff().dropna() == pd.Timedelta("2min")).all()
    assert (train[list(MEASURED_COLUMNS)].dropna() >= 0).all().all()
    assert train["rb_down"].max() <= 100


def test_only_intended_defects() -> None:
    train, test = generate_lte_dataset(train_rows=4000, test_rows=500)
    steps = pd.to_datetime(train["time"], format="ISO8601").diff().dropna()
    assert (steps == pd.Timedelta(0)).sum() == 3
    assert (steps == pd.Timedelta("2min") * 16).sum() == 1
    assert set(steps.unique()) == {pd.Timedelta(0), pd.Timedelta("2min"), pd.Timedelta("32min")}
    assert train["time"].notna().all()
    missing = train[list(MEASURED_COLUMNS)].isna().to_numpy().mean()
    assert 0 < missing < 0.005
    assert not test.isna().any().any()


def test_columns_are_correlated_through_the_user_count() -> None:
    train, _ = generate_lte_dataset(train_rows=4000, test_rows=10)
    correlation = train[list(MEASURED_COLUMNS)].corr()
    assert correlation.loc["rnti_count", "rb_down"] > 0.5
    assert correlation.loc["rnti_count", "mcs_down"] < -0.3


def test_identifier_column_and_write_dataset(tmp_path) -> None:
    train_path, test_path = write_dataset(tmp_path, train_rows=400, test_rows=50, identifier="cell-7")
    assert (train_path.name, test_path.name) == ("train.csv", "test.csv")
    frame = read_measurements(train_path, DataConfig())
    assert list(frame.columns) == ["time", "identifier", *MEASURED_COLUMNS]
    assert set(frame["identifier"]) == {"cell-7"}
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert np.isfinite(read_measurements(test_path, DataConfig())[list(MEASURED_COLUMNS)].to_numpy()).all()
