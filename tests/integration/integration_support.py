"""What several integration test modules share: a consumer worker process, an HTTP service process coming up, and
an uploaded dataset."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from flts.data.generate import generate_lte_dataset
from flts.messages import DatasetUploaded, ObjectRef
from flts.settings import CommonSettings, ConsumerSettings
from flts.storage import ObjectStore


class Worker:
    """One slow_worker.py process and what it recorded: ``start``/``done`` lines with times."""

    def __init__(
        self,
        tmp_path: Path,
        stack_env: dict[str, str],
        settings: ConsumerSettings,
        topic: str | None = None,
        mode: str = "message",
        env: dict[str, str] | None = None,
    ) -> None:
        """`mode` "train": the worker is a trainer (TrainingJob, a persistence model whose fit holds)."""
        self.record = tmp_path / "handled.txt"
        self.hold = tmp_path / "hold"
        self.log = tmp_path / "worker.log"
        self.record.touch()
        self.hold.touch()
        env = {
            **os.environ,
            **stack_env,
            "SERVICE_NAME": "fault-worker",
            "CONSUMER_GROUP": settings.consumer_group,
            "TOPIC_DEAD_LETTER": settings.topic_dead_letter,
            "SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "MAX_POLL_INTERVAL_MS": str(settings.max_poll_interval_ms),
            "HANDLER_BACKOFF_SECONDS": str(settings.handler_backoff_seconds),
            "CONSUMER_STALL_SECONDS": "0",
            "METRICS_PORT": "0",
            **(env or {}),
        }
        script = Path(__file__).with_name("slow_worker.py")
        topic = topic or settings.topic_model_training
        command = [sys.executable, str(script), topic, str(self.record), str(self.hold), mode]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def lines(self, kind: str, event_id: str) -> list[float]:
        rows = (line.split() for line in self.record.read_text().splitlines())
        return [float(t) for k, e, t in rows if (k, e) == (kind, event_id)]

    def wait_for(self, kind: str, event_id: str, timeout: float) -> float | None:
        """The time of the first ``kind`` line for the event, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the worker exited:\n{self.log.read_text()[-3000:]}"
            if found := self.lines(kind, event_id):
                return found[0]
            time.sleep(0.2)
        return None

    def stop(self) -> None:
        self.hold.unlink(missing_ok=True)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until_healthy(name: str, url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until the service process answers ``url``/healthz; fails with its log's tail if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while not answers(f"{url}/healthz"):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.5)


def upload_dataset(
    store: ObjectStore, settings: CommonSettings, seed: int, identifier: str | None = None
) -> DatasetUploaded:
    train, test = generate_lte_dataset(train_rows=800, test_rows=200, seed=seed)
    refs = {}
    for name, frame in (("train", train), ("test", test)):
        stored = store.put_stream(
            f"s3://{settings.bucket_datasets}/it/{uuid.uuid4().hex}/{name}.csv",
            io.BytesIO(frame.to_csv(index=False).encode()),
        )
        refs[name] = ObjectRef(uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size_bytes, rows=len(frame))
    return DatasetUploaded(
        dataset_id=uuid.uuid4().hex[:16],
        identifier=identifier or f"it-{seed}-{uuid.uuid4().hex[:6]}",
        train=refs["train"],
        test=refs["test"],
        filename="t.csv",
        columns=[],
    )
