"""Every model type that is not a network: the baselines (persistence, seasonal naive), Theta, AutoETS, LightGBM,
AutoARIMA and Prophet. Consumes `training-data` in its own group and trains the types the pipeline config
expects (`evaluation.expected_model_types`), fastest first: the baselines take milliseconds and put the floor on
the leaderboard early, Theta and AutoETS a second or two (an interim champion within seconds that is already
about as good as the networks), Prophet longest. Its types, their fits and their order are the table's
(flts.models.types: trainer "nonml", fit_order).
"""

from __future__ import annotations

import os

from flts.config import load_pipeline_config
from flts.messages import TrainingData
from flts.models import types as model_types
from flts.runtime import run_consumer
from flts.settings import NonmlSettings
from flts.train import Fit, TrainingJob


def expected_fits(settings: NonmlSettings, expected: list[str]) -> dict[str, Fit]:
    """This service's model types that the pipeline expects, fastest first."""
    mine = [model_types.BY_NAME[name] for name in model_types.names(trainer="nonml") if name in expected]
    return {spec.name: spec.bind_fit(settings) for spec in sorted(mine, key=lambda spec: spec.fit_order)}


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
