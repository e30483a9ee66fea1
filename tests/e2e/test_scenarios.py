"""Every generator scenario through the real stack, small sizes: what the champion serves, column by column, is
never worse than persistence on a column by more than 2 % (test split), and better on average.

One upload per scenario (`flts generate --scenario`), all at once, each with an identifier of its own; eval picks
every column's winner on validation, and inference serves each column by it (`column_winners`), so the served
forecast's error per column is the winner's, read from the leaderboard's `rmse_vs_persistence`.
"""

from __future__ import annotations

import numpy as np
import pytest

from flts.data.generate import SCENARIOS, write_dataset
from flts.records import LineageStatus

pytestmark = pytest.mark.e2e

TOLERANCE = 1.02


@pytest.fixture(scope="module")
def decided(client, tmp_path_factory) -> dict[str, LineageStatus]:
    """Each scenario's lineage followed to its final champion (the trainers take the uploads in turn)."""
    uploads = {}
    for name in SCENARIOS:
        train, test = write_dataset(
            tmp_path_factory.mktemp(name), train_rows=4_000, test_rows=1_000, seed=11, scenario=name
        )
        uploads[name] = client.upload(train, test, identifier=f"scenario-{name.replace('_', '-')}")
    return {
        name: client.wait_for_champion(upload["config_hash"], upload["identifier"], timeout=600)
        for name, upload in uploads.items()
    }


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_served_forecast_is_never_worse_than_persistence_on_a_column(
    decided: dict[str, LineageStatus], scenario: str
) -> None:
    status = decided[scenario]
    board = {entry.model_type: entry for entry in status.leaderboard}
    winners = status.decision.column_winners
    assert sorted(winners) == sorted(status.preprocessed.target_columns)
    served = {column: board[winner].rmse_vs_persistence[column] for column, winner in winners.items()}
    assert max(served.values()) <= TOLERANCE, served
    assert np.mean(list(served.values())) < 1.0, served
