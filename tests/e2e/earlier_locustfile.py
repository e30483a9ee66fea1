"""Reproduces the requests of the earlier system's Locust client (the project FLTS replaces), for
tests/e2e/test_third_party_clients.py: our own minimal file, not that client's code.

That client drives two services from one Locust process: `--host` is inference's, and both requests go to
absolute URLs taken from its environment, so they follow it:

- `POST $PREDICT_URL` with `{"inference_length": 1}` (no rows: the latest ones the replica knows), weight 80;
- `GET $GATEWAY_BASE/download/processed-data/test_processed_data.parquet`, once when a user starts (its
  warm-up) and then as a task of weight 10.

Neither sends a key or any header of its own, and every user waits 1 to 2 s between tasks. A non-2xx answer is a
failure (Locust's default for HttpUser).
"""

from __future__ import annotations

import os

from locust import HttpUser, between, task

GATEWAY_BASE = os.environ.get("GATEWAY_BASE", "http://127.0.0.1:8000").rstrip("/")
PREDICT_URL = os.environ.get("PREDICT_URL", "http://127.0.0.1:8001/predict")
DOWNLOAD_URL = f"{GATEWAY_BASE}/download/processed-data/test_processed_data.parquet"


class EarlierClient(HttpUser):
    wait_time = between(1, 2)

    def on_start(self) -> None:
        self.client.get(DOWNLOAD_URL, name="download (warm-up)")

    @task(80)
    def predict(self) -> None:
        self.client.post(PREDICT_URL, json={"inference_length": 1}, name="predict")

    @task(10)
    def download(self) -> None:
        self.client.get(DOWNLOAD_URL, name="download")
