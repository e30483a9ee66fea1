"""A consumer process for the broker fault tests: the first message's handler runs long (training).

Appends ``start <event_id> <unix time>`` and ``done <event_id> <unix time>`` lines to the record file,
and only for the message it is told to hold: holds the handler until the hold file disappears.
"""

import os
import sys
import time
from pathlib import Path

from flts.config import ConsumerSettings
from flts.messages import ModelTraining
from flts.runtime import run_consumer


def main() -> None:
    topic, record, hold = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    def write(line: str) -> None:
        with record.open("a") as out:
            out.write(f"{line} {time.time():.3f}\n")
            out.flush()
            os.fsync(out.fileno())

    def handle(message: ModelTraining) -> None:
        write(f"start {message.event_id}")
        while hold.exists():
            time.sleep(0.2)
        write(f"done {message.event_id}")

    run_consumer(ConsumerSettings(), topic, ModelTraining, lambda: handle)


if __name__ == "__main__":
    main()
