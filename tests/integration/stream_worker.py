"""An inference replica's stream forecaster alone, for the kill -9 test: each identifier named is served by the
model bundle given (no seed window: every series' window fills from the stream). Settings (the topics, the group,
the broker) come from the environment, as in the service."""

import sys
import threading
from pathlib import Path

from flts.config import PipelineConfig
from flts.predict import ModelIdentity, ServingModel
from flts.settings import InferenceSettings
from inference_container.champions import Champions
from inference_container.streaming import stream_forecasts


def main() -> None:
    bundle, identifiers = Path(sys.argv[1]), sys.argv[2].split(",")
    champions = Champions()
    for identifier in identifiers:
        identity = ModelIdentity(identifier, "GRU", "1", "run-gru", "f" * 64)
        champions.install(ServingModel.load(bundle, identity, PipelineConfig().inference.max_inference_length))
    stream_forecasts(InferenceSettings(), champions, threading.Event())


if __name__ == "__main__":
    main()
