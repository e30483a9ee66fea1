"""Every model type that is not a network: the baselines (persistence, seasonal naive), Theta, AutoETS, LightGBM,
AutoARIMA and Prophet. Consumes `training-data` in its own group and trains the types the pipeline config
expects (`evaluation.expected_model_types`), fastest first: the baselines take milliseconds and put the floor on
the leaderboard early, Theta and AutoETS a second or two (an interim champion within seconds that is already
about as good as the networks), Prophet longest.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from flts.config import NonmlSettings, load_pipeline_config
from flts.messages import TrainingData
from flts.models.base import TrainedForecaster
from flts.runtime import run_consumer
from flts.train import EpochCallback, Fit, LineageData, TrainingJob


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


def fit_lightgbm(data: LineageData, _: EpochCallback) -> tuple[TrainedForecaster, dict[str, Any]]:
    from flts.models.boosted import fit_boosted

    hyper = data.config.models.boosted
    forecaster = fit_boosted(data.windows["train"], data.windows["validation"], data.layout, hyper)
    return forecaster, {f"lightgbm.{key}": value for key, value in hyper.model_dump().items()}


def statistical_fit(model_type: str) -> Fit:
    """Fitted on the train split only: eval chooses each column's model by its validation scores."""

    def fit(data: LineageData, _: EpochCallback) -> tuple[TrainedForecaster, dict[str, Any]]:
        from flts.models.statistical import fit_statistical

        hyper = data.config.models.statistical
        forecaster = fit_statistical(model_type, data.frames["train"], data.claim.target_columns, hyper, data.layout)
        columns = zip(data.claim.target_columns, forecaster.columns, strict=True)
        described = {f"column.{column}": model.description for column, model in columns}
        return forecaster, {**{f"statistical.{k}": v for k, v in hyper.model_dump().items()}, **described}

    return fit


def expected_fits(settings: NonmlSettings, expected: list[str]) -> dict[str, Fit]:
    """This service's model types that the pipeline expects, fastest first."""
    fits: dict[str, Fit] = {
        "PERSISTENCE": fit_persistence,
        "SEASONAL_NAIVE": fit_seasonal_naive,
        "THETA": statistical_fit("THETA"),
        "AUTOETS": statistical_fit("AUTOETS"),
        "LIGHTGBM": fit_lightgbm,
        "AUTOARIMA": statistical_fit("AUTOARIMA"),
        "PROPHET": lambda data, on_epoch: fit_prophet(settings, data, on_epoch),
    }
    return {model_type: fit for model_type, fit in fits.items() if model_type in expected}


def main() -> None:
    # LightGBM's OpenMP threads spin while they wait for work by default: on cores the trainers share, that spinning
    # took 84 s of a 14 s fit (two cores, two busy processes beside it); passive waiting took 35 s. Set before
    # lightgbm (and its libgomp) is first imported; an operator's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    settings = NonmlSettings()
    fits = expected_fits(settings, load_pipeline_config(settings.pipeline_config).evaluation.expected_model_types)

    def make_handler():
        return TrainingJob(settings, fits)

    run_consumer(settings, settings.topic_training_data, TrainingData, make_handler)


if __name__ == "__main__":
    main()
