"""GRU / LSTM trainer (MODEL_TYPE): consumes `training-data` in its own group per model type."""

from __future__ import annotations

from typing import Any

from flts.config import TrainSettings
from flts.messages import TrainingData
from flts.models.base import TrainedForecaster
from flts.runtime import run_consumer
from flts.train import EpochCallback, LineageData, TrainingJob


def fit_recurrent(
    settings: TrainSettings, data: LineageData, on_epoch: EpochCallback
) -> tuple[TrainedForecaster, dict[str, Any]]:
    from flts.models.recurrent import train_recurrent

    hyper = data.config.models.recurrent
    forecaster, history = train_recurrent(
        settings.model_type,
        data.windows["train"],
        data.windows["validation"],
        data.layout,
        hyper,
        device=settings.device,
        num_threads=settings.torch_num_threads,
        on_epoch=on_epoch,
    )
    params = {f"recurrent.{key}": value for key, value in hyper.model_dump().items()}
    return forecaster, {**params, "epochs_run": len(history), "torch_threads": settings.torch_num_threads}


def main() -> None:
    settings = TrainSettings()

    def make_handler():
        fit = {settings.model_type: lambda data, on_epoch: fit_recurrent(settings, data, on_epoch)}
        return TrainingJob(settings, fit)

    run_consumer(settings, settings.topic_training_data, TrainingData, make_handler)


if __name__ == "__main__":
    main()
