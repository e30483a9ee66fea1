"""preprocess and prepare_for_inference: grid, gaps, split, sampling, features, scaling, replay."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flts.config import PipelineConfig
from flts.data.generate import generate_lte_dataset
from flts.data.io import DataError, read_measurements
from flts.data.metadata import PreprocessingMetadata
from flts.data.preprocess import ProcessedDataset, prepare_for_inference, preprocess

START = pd.Timestamp("2024-01-01")  # a Monday, 00:00 UTC
STEP = pd.Timedelta("2min")


def _raw(rows: int = 200, start: pd.Timestamp = START) -> pd.DataFrame:
    index = np.arange(rows, dtype=float)
    return pd.DataFrame(
        {
            "time": pd.date_range(start, periods=rows, freq=STEP),
            "down": index,
            "up": (index % 7) * 3.0,
            "flat": np.full(rows, 5.0),
        }
    )


def _config(**preprocessing: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"windows": {"input_seq_len": 4, "output_seq_len": 2}, "preprocessing": preprocessing}
    )


def _all(processed: ProcessedDataset) -> pd.DataFrame:
    return pd.concat([processed.train, processed.validation, processed.test], ignore_index=True)


def _original(processed: ProcessedDataset, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A measured column of a processed frame back on the original scale."""
    scaler = processed.metadata.fitted_scaler
    return scaler.inverse(frame[[column]].to_numpy(), [column])[:, 0]


def test_generated_dataset_end_to_end() -> None:
    train, _ = generate_lte_dataset(train_rows=3000, test_rows=400)
    config = PipelineConfig.model_validate({"preprocessing": {"lag_features": [5, 1]}})
    processed = preprocess(read_measurements(train.to_csv(index=False).encode(), config.data), None, config)
    metadata = processed.metadata
    assert PreprocessingMetadata.parse(json.loads(json.dumps(metadata.to_json())), "a round trip") == metadata
    measured = list(train.columns[1:])
    assert metadata.measured_columns == metadata.target_columns == measured
    lags = [f"{name}_lag{lag}" for name in measured for lag in (1, 5)]
    assert metadata.feature_columns == [*measured, *lags, "hour_sin", "hour_cos", "dow_sin", "dow_cos", "is_gap"]
    assert metadata.frequency == "2min"
    assert metadata.duplicates_dropped == 3
    assert metadata.gap_rows_filled > 15
    assert metadata.config == config
    for key in ("time_column", "scaler", "clip", "time_features", "lag_features", "imputation", "rows"):
        assert key in metadata.to_json()
    for frame in (processed.train, processed.validation, processed.test):
        assert list(frame.columns) == ["time", *metadata.feature_columns]
        assert (frame.dtypes.iloc[1:] == np.float32).all()
        assert np.isfinite(frame.iloc[:, 1:].to_numpy()).all()
    assert sum(metadata.rows.values()) == 3000 + 15 - 3 - 5


def test_grid_reindex_with_gaps_and_duplicates() -> None:
    raw = _raw(100).drop(index=[10, 11, 12])
    resent = raw.loc[[20]].assign(down=999.0)
    shuffled = pd.concat([raw, resent]).sample(frac=1.0, random_state=1)
    stable_order = pd.concat([raw, resent])  # the re-sent row comes later in the file: it wins
    processed = preprocess(stable_order, None, _config())
    everything = _all(processed)
    assert len(everything) == 100
    assert (everything["time"].diff().dropna() == STEP).all()
    assert everything["is_gap"].to_numpy().nonzero()[0].tolist() == [10, 11, 12]
    assert _original(processed, everything, "down")[20] == pytest.approx(999.0)
    assert processed.metadata.duplicates_dropped == 1
    assert processed.metadata.gap_rows_filled == 3
    assert len(_all(preprocess(shuffled, None, _config()))) == 100


@pytest.mark.parametrize(
    ("method", "expected"),
    [("linear", [30.0, 31.0]), ("ffill", [29.0, 29.0]), ("zero", [0.0, 0.0]), ("mean", None)],
)
def test_each_imputation_fills_and_marks(method: str, expected: list[float] | None) -> None:
    raw = _raw(100)
    raw.loc[30, "down"] = np.nan
    raw = raw.drop(index=[31])
    processed = preprocess(raw, None, _config(imputation=method))
    everything = _all(processed)
    filled = _original(processed, everything, "down")[[30, 31]]
    if expected is None:
        train_values = [value for value in range(len(processed.train)) if value not in (30, 31)]
        expected = [float(np.mean(train_values))] * 2
        assert processed.metadata.imputation.fill_values["down"] == pytest.approx(expected[0])
    np.testing.assert_allclose(filled, expected, atol=1e-4)
    assert everything["is_gap"].to_numpy().nonzero()[0].tolist() == [30, 31]
    assert np.isfinite(everything.iloc[:, 1:].to_numpy()).all()


def test_linear_does_not_bridge_gaps_longer_than_the_limit() -> None:
    raw = _raw(100).drop(index=[*range(20, 24), *range(50, 52)])
    processed = preprocess(raw, None, _config(max_gap_fill_steps=2))
    down = _original(processed, _all(processed), "down")
    np.testing.assert_allclose(down[20:24], 19.0, atol=1e-4)
    np.testing.assert_allclose(down[50:52], [50.0, 51.0], atol=1e-4)


def test_missing_values_at_the_edges_are_filled() -> None:
    raw = _raw(100)
    raw.loc[[0, 1], "up"] = np.nan
    raw.loc[99, "down"] = np.inf
    processed = preprocess(raw, None, _config())
    everything = _all(processed)
    assert np.isfinite(everything.iloc[:, 1:].to_numpy()).all()
    assert _original(processed, everything, "up")[0] == pytest.approx(_original(processed, everything, "up")[2])
    assert _original(processed, everything, "down")[99] == pytest.approx(98.0, abs=1e-4)
    assert everything["is_gap"].to_numpy().nonzero()[0].tolist() == [0, 1, 99]


def test_split_is_chronological_without_overlap() -> None:
    processed = preprocess(_raw(200), None, _config())
    train, validation, test = processed.train, processed.validation, processed.test
    assert (len(train), len(validation), len(test)) == (140, 30, 30)
    assert validation["time"].iloc[0] - train["time"].iloc[-1] == STEP
    assert test["time"].iloc[0] - validation["time"].iloc[-1] == STEP
    assert processed.metadata.rows == {"train": 140, "validation": 30, "test": 30}
    assert processed.metadata.time_range["test"]["last"] == (START + 199 * STEP).tz_localize("UTC").isoformat()
    assert processed.metadata.test_source == "split"


def test_separate_test_file_is_the_test_set() -> None:
    test_raw = _raw(60, start=START + 200 * STEP).drop(index=[5])
    processed = preprocess(_raw(200), test_raw, _config())
    assert (len(processed.train), len(processed.validation), len(processed.test)) == (170, 30, 60)
    assert processed.test["time"].iloc[0] == (START + 200 * STEP).tz_localize("UTC")
    assert processed.test["is_gap"].sum() == 1
    assert processed.metadata.test_source == "file"
    assert processed.metadata.input_rows == {"train": 200, "test": 59}


def test_sampling_keeps_the_most_recent_training_rows_and_the_first_test_rows() -> None:
    processed = preprocess(_raw(400), None, _config(sample={"max_train_rows": 100, "max_test_rows": 20}))
    train, validation, test = processed.train, processed.validation, processed.test
    assert (len(train), len(validation), len(test)) == (82, 18, 20)
    # 400 rows: test = the last 60, of which the first 20 are kept; train+validation end right before it.
    assert test["time"].iloc[0] == (START + 340 * STEP).tz_localize("UTC")
    assert train["time"].iloc[0] == (START + 240 * STEP).tz_localize("UTC")
    assert validation["time"].iloc[-1] + STEP == test["time"].iloc[0]
    assert processed.metadata.fitted_scaler.center[0] == 240.0


def test_scaler_is_fitted_on_the_train_split_only() -> None:
    raw = _raw(200)
    changed = raw.copy()
    changed.loc[150:, ["down", "up"]] *= 100.0
    first = preprocess(raw, None, _config())
    second = preprocess(changed, None, _config())
    assert first.metadata.scaler == second.metadata.scaler
    scaler = first.metadata.fitted_scaler
    assert scaler.center[0] == 0.0 and scaler.scale[0] == 139.0
    assert first.train["down"].max() == 1.0 and second.test["down"].max() > 100


@pytest.mark.parametrize("kind", ["minmax", "standard", "robust", "maxabs"])
def test_constant_column_gives_finite_output(kind: str) -> None:
    processed = preprocess(_raw(200), None, _config(scaler=kind))
    everything = _all(processed)
    assert np.isfinite(everything.iloc[:, 1:].to_numpy()).all()
    assert everything["flat"].nunique() == 1


@pytest.mark.parametrize("method", ["iqr", "percentile"])
def test_outlier_clipping_uses_train_bounds(method: str) -> None:
    raw = _raw(200)
    raw.loc[190, "up"] = 1e6
    processed = preprocess(raw, None, _config(outliers={"method": method, "iqr_k": 1.0}))
    low, high = processed.metadata.clip["up"]
    train_up = (np.arange(140) % 7) * 3.0
    if method == "iqr":
        q25, q75 = np.percentile(train_up, [25, 75])
        assert (low, high) == pytest.approx((q25 - (q75 - q25), q75 + (q75 - q25)))
    else:
        assert (low, high) == pytest.approx(tuple(np.percentile(train_up, [0.5, 99.5])))
    assert _original(processed, processed.test, "up").max() == pytest.approx(high, rel=1e-5)


def test_lag_and_time_features() -> None:
    config = _config(lag_features=[3, 1], time_features=["hour", "day_of_week"])
    config = config.model_copy(update={"data": config.data.model_copy(update={"target_columns": ["down"]})})
    processed = preprocess(_raw(400), None, config)
    train, validation = processed.train, processed.validation
    assert processed.metadata.lag_columns == ["down_lag1", "down_lag3"]
    assert train["time"].iloc[0] == (START + 3 * STEP).tz_localize("UTC")
    np.testing.assert_array_equal(train["down_lag1"].to_numpy()[1:], train["down"].to_numpy()[:-1])
    np.testing.assert_array_equal(train["down_lag3"].to_numpy()[3:], train["down"].to_numpy()[:-3])
    assert validation["down_lag1"].iloc[0] == train["down"].iloc[-1]
    at_six = train[train["time"] == (START + pd.Timedelta("6h")).tz_localize("UTC")].iloc[0]
    assert (at_six["hour_sin"], at_six["hour_cos"]) == pytest.approx((1.0, 0.0), abs=1e-6)
    assert (at_six["dow_sin"], at_six["dow_cos"]) == pytest.approx(
        (np.sin(2 * np.pi * 0.25 / 7), np.cos(2 * np.pi * 0.25 / 7)), abs=1e-6
    )
    assert not {"hour_sin", "is_gap"} & set(processed.metadata.scaler["columns"])


def test_frequency_is_inferred_from_jittered_times_or_configured() -> None:
    raw = _raw(200)
    raw["time"] += pd.to_timedelta(np.tile([0, 1, -1, 2], 50), unit="s")
    processed = preprocess(raw, None, _config())
    assert processed.metadata.frequency == "2min"
    assert _all(processed)["is_gap"].sum() == 0
    assert preprocess(_raw(200), None, _config(frequency="2min")).metadata.frequency == "2min"


@pytest.mark.parametrize(
    ("frequency", "message"),
    [("NONSENSE", "not a fixed pandas offset alias"), ("MS", "not a fixed pandas offset alias")],
)
def test_bad_configured_frequency(frequency: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        preprocess(_raw(200), None, _config(frequency=frequency))


def test_a_grid_that_is_mostly_missing_is_rejected() -> None:
    raw = _raw(200)
    raw.loc[100:, "time"] += pd.Timedelta("7D")
    with pytest.raises(DataError, match="is the frequency right"):
        preprocess(raw, None, _config())


def test_too_few_rows_and_bad_lags_are_data_errors() -> None:
    with pytest.raises(DataError, match="at least"):
        preprocess(_raw(20), None, _config())
    with pytest.raises(DataError, match="lag_features must be positive"):
        preprocess(_raw(200), None, _config(lag_features=[0]))


def _served() -> tuple[pd.DataFrame, ProcessedDataset]:
    """A processed dataset with every transform on, and its raw separately uploaded test file."""
    train, test = generate_lte_dataset(train_rows=1500, test_rows=200)
    config = _config(lag_features=[2, 4], outliers={"method": "iqr"}, scaler="robust")
    return test, preprocess(train, test, config)


def test_prepare_for_inference_equals_preprocess_output() -> None:
    raw_test, processed = _served()
    rows = raw_test.iloc[50:80].sample(frac=1.0, random_state=3)
    prepared = prepare_for_inference(rows, processed.metadata)
    expected = processed.test.iloc[50:76].reset_index(drop=True)  # the first 4 rows only feed the lags
    pd.testing.assert_frame_equal(prepared, expected)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows.drop(columns=["up", "rb_up"]), "missing columns: up, rb_up"),
        (lambda rows: rows.drop(columns=["time"]), "missing columns: time"),
        (lambda rows: rows.iloc[:0], "no rows"),
        (lambda rows: rows.assign(up=rows["up"].where(rows.index != 3)), "column 'up', row 4: value is missing"),
        (lambda rows: rows.assign(down=rows["down"].replace(rows["down"].iloc[0], np.inf)), "'down', row 1"),
        (lambda rows: rows.assign(up=["x", *rows["up"].iloc[1:]]), "column 'up', row 1: 'x' is not a number"),
        (lambda rows: rows.assign(time=["soon", *rows["time"].iloc[1:]]), "cannot parse 'soon'"),
        (lambda rows: pd.concat([rows, rows.iloc[[2]]]), "appears more than once (rows 3, 11)"),
        (lambda rows: rows.drop(index=[5]), "must be consecutive 2min steps"),
        (lambda rows: rows.iloc[:4], "send 4 extra rows before the window (8 rows for one window)"),
    ],
)
def test_prepare_for_inference_errors(mutate: Any, message: str) -> None:
    raw_test, processed = _served()
    rows = raw_test.iloc[:10].reset_index(drop=True)
    with pytest.raises(DataError) as error:
        prepare_for_inference(mutate(rows), processed.metadata)
    assert message in str(error.value)


def test_prepare_for_inference_rejects_times_off_the_training_grid() -> None:
    raw_test, processed = _served()
    rows = raw_test.iloc[:10].assign(time=pd.to_datetime(raw_test["time"].iloc[:10]) + pd.Timedelta("1min"))
    with pytest.raises(DataError, match="is not on the 2min grid of the training data"):
        prepare_for_inference(rows, processed.metadata)
