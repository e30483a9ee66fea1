"""A network's trainer (MODEL_TYPE: GRU, LSTM, TCN, TRANSFORMER or SEQ2SEQ): consumes `training-data` in its own
group per model type and trains it with the type's fit (flts.models.types)."""

from __future__ import annotations

from flts.messages import TrainingData
from flts.models.types import model_type_spec
from flts.runtime import run_consumer
from flts.settings import TrainSettings
from flts.train import TrainingJob


def main() -> None:
    settings = TrainSettings()
    fit = model_type_spec(settings.model_type).bind_fit(settings)

    def make_handler():
        return TrainingJob(settings, {settings.model_type: fit})

    run_consumer(settings, settings.topic_training_data, TrainingData, make_handler)


if __name__ == "__main__":
    main()
