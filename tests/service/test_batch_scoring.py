"""The batch-scoring path without Kafka: every window of a series in one call, and the result table."""

from __future__ import annotations

import numpy as np

from flts.predict import processed_series
from inference_container.scoring import result_table


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
