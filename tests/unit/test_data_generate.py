"""The bundled dataset generator: deterministic, the documented schema, and only intended defects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flts.config import DataConfig, PipelineConfig
from flts.data.generate import (
    IDLE_MISSING_COLUMNS,
    IDLE_ZERO_COLUMNS,
    MEASURED_COLUMNS,
    SCENARIOS,
    UPLINK_COLUMNS,
    generate_lte_dataset,
    write_dataset,
)
from flts.data.io import read_measurements
from flts.data.preprocess import preprocess

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


def _scenario(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_lte_dataset(train_rows=3000, test_rows=1000, scenario=name)


def _zero_runs(frame: pd.DataFrame, min_rows: int) -> int:
    """Runs of at least `min_rows` rows in which every measured column is 0."""
    all_zero = (frame[list(MEASURED_COLUMNS)] == 0).all(axis=1).to_numpy()
    run_ids = np.cumsum(~all_zero)[all_zero]
    return int((np.bincount(run_ids) >= min_rows).sum())


def test_unknown_scenario_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'flood'; one of default, level_shift"):
        generate_lte_dataset(train_rows=100, test_rows=10, scenario="flood")


def test_level_shift_lowers_only_the_uplink_columns_of_the_test_period() -> None:
    default_train, default_test = _scenario("default")
    train, test = _scenario("level_shift")
    pd.testing.assert_frame_equal(train, default_train)
    shifted = list(UPLINK_COLUMNS)
    others = [column for column in MEASURED_COLUMNS if column not in UPLINK_COLUMNS]
    pd.testing.assert_frame_equal(test[others], default_test[others])
    ratio = test[shifted].mean() / train[shifted].mean()
    assert (ratio < 0.4).all(), ratio


def test_outages_put_runs_of_zeros_and_of_missing_cells_into_train_and_test() -> None:
    default_train, default_test = _scenario("default")
    train, test = _scenario("outages")
    for frame, default in ((train, default_train), (test, default_test)):
        assert _zero_runs(frame, 10) >= 1
        assert _zero_runs(default, 10) == 0
        missing = frame[list(MEASURED_COLUMNS)].isna()
        assert missing.to_numpy().sum() >= 3 + default[list(MEASURED_COLUMNS)].isna().to_numpy().sum()
        longest_missing_run = max(
            int(np.bincount(np.cumsum(~missing[column].to_numpy())[missing[column].to_numpy()]).max(initial=0))
            for column in MEASURED_COLUMNS
        )
        assert longest_missing_run >= 3


def _spikes(series: pd.Series) -> int:
    """Values over 3x the median of the hour around them."""
    return int((series > 3 * series.rolling(31, center=True).median()).sum())


def test_uplink_bursts_add_spikes_to_the_uplink_columns_only() -> None:
    default_train, _ = _scenario("default")
    train, _ = _scenario("uplink_bursts")
    for column in UPLINK_COLUMNS:
        assert _spikes(train[column]) >= 3 * max(_spikes(default_train[column]), 1), column
        assert (train[column].dropna() >= default_train[column].dropna() - 1e-6).all()
    others = [column for column in MEASURED_COLUMNS if column not in UPLINK_COLUMNS]
    pd.testing.assert_frame_equal(train[others], default_train[others])


def test_idle_nights_have_no_traffic_and_no_per_user_columns() -> None:
    train, test = _scenario("idle")
    for frame in (train, test):
        idle = frame[list(IDLE_MISSING_COLUMNS)].isna().all(axis=1)
        assert idle.sum() >= 30
        assert (frame.loc[idle, list(IDLE_ZERO_COLUMNS)] == 0).all().all()
        hours = pd.to_datetime(frame.loc[idle, "time"], format="ISO8601").dt.hour
        assert hours.between(1, 5).all()
    assert set(IDLE_MISSING_COLUMNS).isdisjoint(IDLE_ZERO_COLUMNS)
    assert set(IDLE_MISSING_COLUMNS) | set(IDLE_ZERO_COLUMNS) == set(MEASURED_COLUMNS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_preprocesses_into_finite_splits(name: str) -> None:
    train, test = _scenario(name)
    processed = preprocess(train, test, PipelineConfig())
    for split in (processed.train, processed.validation, processed.test):
        assert np.isfinite(split[processed.metadata.feature_columns].to_numpy()).all()
