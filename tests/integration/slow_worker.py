"""A consumer process for the fault tests: the first message's handler runs long (training).

Appends ``start <id> <unix time>`` and ``done <id> <unix time>`` lines to the record file, and holds the
handler until the hold file disappears. Mode "message" (default) handles `ModelTraining` events (id: the
event's); mode "train" is a trainer (the services' TrainingJob, a persistence model whose fit holds; id:
the claim's config_hash).
"""

import os
import sys
import time
from pathlib import Path

from flts.messages import ModelTraining, TrainingData
from flts.runtime import run_consumer
from flts.settings import ConsumerSettings


def main() -> None:
    topic, record, hold, mode = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

    def write(line: str) -> None:
        with record.open("a") as out:
            out.write(f"{line} {time.time():.3f}\n")
            out.flush()
            os.fsync(out.fileno())

    def held(name: str) -> None:
        write(f"start {name}")
        while hold.exists():
            time.sleep(0.2)
        write(f"done {name}")

    settings = ConsumerSettings()
    if mode == "train":
        from flts.models.baselines import PersistenceForecaster
        from flts.train import TrainingJob

        def fit(data, _):
            held(data.claim.config_hash)
            return PersistenceForecaster(data.layout), {}

        run_consumer(settings, topic, TrainingData, lambda: TrainingJob(settings, {"PERSISTENCE": fit}))
    else:
        run_consumer(settings, topic, ModelTraining, lambda: lambda message: held(message.event_id))


if __name__ == "__main__":
    main()
