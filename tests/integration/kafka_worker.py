"""A consumer process for the crash tests: records each message it finished handling, slowly; with a fourth
argument, the process dies (as the OOM killer would end it) whenever it handles that event id."""

import os
import sys
import time
from pathlib import Path

from flts.kafka import ConsumerLoop
from flts.messages import ModelTraining
from flts.settings import ConsumerSettings


def main() -> None:
    topic, group, record = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    crash_on = sys.argv[4] if len(sys.argv) > 4 else None
    settings = ConsumerSettings(session_timeout_ms=6000, max_poll_interval_ms=10000)

    def handle(message: ModelTraining) -> None:
        if message.event_id == crash_on:
            os._exit(137)
        time.sleep(0.4)
        with record.open("a") as out:
            out.write(message.event_id + "\n")
            out.flush()
            os.fsync(out.fileno())

    ConsumerLoop(settings, topic, ModelTraining, handle, group_id=group).run()


if __name__ == "__main__":
    main()
