"""The batch-scoring path without Kafka: every window of a series in one call, and the result table, written a part
at a time."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flts.kafka import PermanentError
from flts.predict import processed_series
from inference_container import scoring
from inference_container.scoring import SUMMARY_KEY, result_table, table_summary, write_result


def test_series_forecasts_equal_the_forecasts_of_each_window_sent_alone(gru_model, processed):
    series = processed_series(processed.test.iloc[:60], processed.metadata)
    together = gru_model.forecast_series(series, chunk=16)
    rows = gru_model.rows_needed
    assert together.values.shape == (60 - rows + 1, gru_model.output_seq_len, len(gru_model.target_columns))
    for index in (0, 17, len(together.values) - 1):
        alone = gru_model.forecast([gru_model.window_from_processed(processed.test.iloc[index : index + rows])], 1)
        np.testing.assert_allclose(together.values[index], alone.values[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(together.nanoseconds[index], alone.nanoseconds[0])


def test_result_table_has_a_row_per_window_and_step_and_errors_only_where_an_actual_was_observed(
    persistence_model, processed
):
    frame = processed.test.iloc[:40].copy()
    frame.loc[30, "is_gap"] = 1.0  # a filled row is no actual
    series = processed_series(frame, processed.metadata)
    forecasts = persistence_model.forecast_series(series)
    table = result_table(persistence_model, series, forecasts)
    windows = 40 - persistence_model.rows_needed + 1
    assert len(table) == windows * persistence_model.output_seq_len
    target = persistence_model.target_columns[0]
    column = persistence_model.measured_columns.index(target)
    # persistence forecasts the last observed value: the error is the step's change
    first = table.iloc[0]
    end = persistence_model.rows_needed - 1
    assert first["window_end"].value == series.nanoseconds[end]
    assert np.isclose(first[f"{target}_actual"], series.values[end + 1, column])
    assert np.isclose(first[f"{target}_error"], series.values[end, column] - series.values[end + 1, column])
    gap_row = table[table["ts"].astype("int64") == series.nanoseconds[30]]
    assert gap_row[f"{target}_actual"].isna().all() and gap_row[f"{target}_error"].isna().all()
    assert table[f"{target}_actual"].isna().sum() == 2  # the gap row and the step after the last row
    assert set(table["model_version"]) == {persistence_model.identity.model_version}


def test_a_result_written_a_part_at_a_time_is_the_whole_table_and_its_footer_keeps_the_announcement(
    gru_model, processed, monkeypatch
):
    series = processed_series(processed.test.iloc[:90], processed.metadata)
    whole = result_table(gru_model, series, gru_model.forecast_series(series))
    monkeypatch.setattr(scoring, "PART_CELLS", 20 * (6 + 3 * len(gru_model.target_columns)))  # 20 rows a part
    sink = io.BytesIO()
    summary = write_result(sink, gru_model, series, "s3://datasets/rows.csv")

    parts = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    assert parts.metadata.num_row_groups == -(-len(whole) // 20)
    written = pd.read_parquet(io.BytesIO(sink.getvalue()))
    pd.testing.assert_frame_equal(written, whole, rtol=1e-5, atol=1e-6)
    assert json.loads(parts.metadata.metadata[SUMMARY_KEY.encode()]) == summary
    expected = table_summary(whole)
    assert summary["mean_absolute_error"] == pytest.approx(expected.pop("mean_absolute_error"))
    assert {k: v for k, v in summary.items() if k != "mean_absolute_error"} == expected
    assert summary["windows"] == 90 - gru_model.rows_needed + 1 and summary["rows"] == len(whole)


def test_rows_too_few_for_one_window_are_a_permanent_error_and_nothing_is_written(persistence_model, processed):
    series = processed_series(processed.test.iloc[: persistence_model.rows_needed - 1], processed.metadata)
    sink = io.BytesIO()
    with pytest.raises(PermanentError, match=r"s3://datasets/rows\.csv: \d+ rows; the model needs at least"):
        write_result(sink, persistence_model, series, "s3://datasets/rows.csv")
    assert sink.getvalue() == b""
