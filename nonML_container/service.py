"""Prophet and the baselines (persistence, seasonal naive): consumes `training-data` in its own group.

The baselines run first: they take milliseconds and put the floor on the leaderboard early.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from flts.config import NonmlSettings
from flts.messages import TrainingData
from flts.models.base import TrainedForecaster
from flts.runtime import run_consumer
from flts.train import EpochCallback, LineageData, TrainingJob


def fit_persistence(data: LineageData, _: EpochCallback) -> tuple[TrainedForecaster, dict[str, Any]]:
    from flts.models.baselines import PersistenceForecaster

    return PersistenceForecaster(data.layout), {}


def fit_seasonal_naive(data: LineageData, _: EpochCallback) -> tuple[TrainedForecaster, dict[str, Any]]:
    from flts.models.baselines import SeasonalNaiveForecaster, default_season_length

    season = data.config.models.baselines.season_length_steps or default_season_length(data.claim.frequency)
    history = pd.concat([data.frames[s] for s in ("train", "validation", "test")], ignore_index=True)
    forecaster = SeasonalNaiveForecaster.from_history(
        history, data.claim.time_column, data.claim.target_columns, season, layout=data.layout
    )
    return forecaster, {"season_length_steps": season}


def fit_prophet(
    settings: NonmlSettings, data: LineageData, _: EpochCallback
) -> tuple[TrainedForecaster, dict[str, Any]]:
    from flts.models.prophet import fit_prophet as fit

    hyper = data.config.models.prophet
    history = pd.concat([data.frames["train"], data.frames["validation"]], ignore_index=True)
    forecaster = fit(
        history,
        data.claim.time_column,
        data.claim.target_columns,
        hyper,
        workers=settings.prophet_workers,
        layout=data.layout,
    )
    return forecaster, {f"prophet.{key}": value for key, value in hyper.model_dump().items()}


def main() -> None:
    settings = NonmlSettings()

    def make_handler():
        fits = {
            "PERSISTENCE": fit_persistence,
            "SEASONAL_NAIVE": fit_seasonal_naive,
            "PROPHET": lambda data, on_epoch: fit_prophet(settings, data, on_epoch),
        }
        return TrainingJob(settings, fits)

    run_consumer(settings, settings.topic_training_data, TrainingData, make_handler)


if __name__ == "__main__":
    main()
