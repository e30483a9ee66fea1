"""Load test of the inference service's POST /predict.

Every request carries a realistic window: consecutive rows of LTE measurements on the 2-minute grid,
all 11 columns, oldest first. Rows come from the bundled dataset generator when `flts` is importable
(the dev venv), else from a small built-in generator with the same columns and daily cycle (the
official Locust image, used by docker compose and the Helm chart, has no flts or pandas).
Any non-200 answer, or a 200 without predictions, is a failure. A run fails (exit code: --exit-code-on-error's,
1 by default) when it crosses a threshold: more failures than --max-failure-ratio of its requests, a 99th
percentile response time above --max-p99-ms, or no request at all. Distributed, the master judges every
worker's requests together. locust/README.md has the commands.

    locust -f locust/locustfile.py --host http://127.0.0.1:8001 --headless -u 50 -r 10 -t 1m --max-p99-ms 500

This file is locust/locustfile.py; the chart carries a byte-identical copy (.helm/files/locustfile.py, which
docker compose mounts too): `make sync-chart-config` after an edit, tests/deploy fails until then.

Settings (environment):
    FLTS_API_KEY             the API key sent as a bearer token (needed when auth is on: compose, the chart)
    FLTS_LOCUST_IDENTIFIER   series whose champion answers (default: global)
    FLTS_LOCUST_WINDOW_ROWS  rows per window (default: 10, the pipeline's input_seq_len)
    FLTS_LOCUST_BATCH        windows per request; 1 sends `rows`, more send `windows` (default: 1)
    FLTS_LOCUST_WAIT         seconds each user waits between requests (default: 0, saturation)
    FLTS_LOCUST_MAX_FAILURE_RATIO   --max-failure-ratio: failed requests over all (default: 0, any failure fails)
    FLTS_LOCUST_MAX_P99_MS          --max-p99-ms: the 99th percentile's limit in ms (default: 0, no limit)
"""

from __future__ import annotations

import logging
import math
import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.runners import WorkerRunner

COLUMNS = (
    "down",
    "up",
    "rnti_count",
    "mcs_down",
    "mcs_down_var",
    "mcs_up",
    "mcs_up_var",
    "rb_down",
    "rb_down_var",
    "rb_up",
    "rb_up_var",
)
STEP = timedelta(minutes=2)
POOL_ROWS = 2_000

IDENTIFIER = os.environ.get("FLTS_LOCUST_IDENTIFIER", "global")
WINDOW_ROWS = int(os.environ.get("FLTS_LOCUST_WINDOW_ROWS", "10"))
BATCH = int(os.environ.get("FLTS_LOCUST_BATCH", "1"))
WAIT_SECONDS = float(os.environ.get("FLTS_LOCUST_WAIT", "0"))
API_KEY = os.environ.get("FLTS_API_KEY", "")
HEADERS = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}


def _from_flts() -> list[dict[str, Any]] | None:
    """Rows of the bundled dataset's clean test split, when the flts package is installed."""
    try:
        from flts.data.generate import generate_lte_dataset
    except ImportError:
        return None
    _, test = generate_lte_dataset(train_rows=200, test_rows=POOL_ROWS, seed=11)
    test = test[["time", *COLUMNS]]
    return [{"time": str(row["time"]), **{c: float(row[c]) for c in COLUMNS}} for row in test.to_dict("records")]


def _built_in(rows: int = POOL_ROWS, seed: int = 11) -> list[dict[str, Any]]:
    """A dependency-free stand-in: a daily load cycle, a shared user count and noise, like a real cell."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 12, tzinfo=UTC)
    out = []
    for i in range(rows):
        when = start + i * STEP
        hour = when.hour + when.minute / 60
        load = 0.15 + 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 4) / 24)) ** 1.5
        load *= math.exp(rng.gauss(0, 0.1))
        users = max(1.0, round(35 * load * math.exp(rng.gauss(0, 0.03))))
        down = users * 900 * math.exp(rng.gauss(0, 0.25))
        up = down * 0.14 * math.exp(rng.gauss(0, 0.2)) + 20 * users
        mcs_down = min(28.0, max(0.0, 22 - 4 * users / 35 + rng.gauss(0, 1.5)))
        mcs_up = min(28.0, max(0.0, 16 - 3 * users / 35 + rng.gauss(0, 1.2)))
        rb_down = min(100.0, 100 * down / (3750 * (mcs_down + 1)))
        rb_up = min(100.0, 100 * up / (1200 * (mcs_up + 1)))
        out.append(
            {
                "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "down": round(down, 1),
                "up": round(up, 1),
                "rnti_count": users,
                "mcs_down": round(mcs_down, 2),
                "mcs_down_var": round((2 + 0.08 * users) * math.exp(rng.gauss(0, 0.3)), 3),
                "mcs_up": round(mcs_up, 2),
                "mcs_up_var": round((1.5 + 0.06 * users) * math.exp(rng.gauss(0, 0.3)), 3),
                "rb_down": round(rb_down, 2),
                "rb_down_var": round((2 + 0.3 * rb_down) * math.exp(rng.gauss(0, 0.25)), 3),
                "rb_up": round(rb_up, 2),
                "rb_up_var": round((2 + 0.3 * rb_up) * math.exp(rng.gauss(0, 0.25)), 3),
            }
        )
    return out


POOL = _from_flts() or _built_in()


def random_window(rng: random.Random) -> list[dict[str, Any]]:
    start = rng.randrange(0, len(POOL) - WINDOW_ROWS)
    return POOL[start : start + WINDOW_ROWS]


def request_body(rng: random.Random) -> dict[str, Any]:
    if BATCH <= 1:
        return {"identifier": IDENTIFIER, "rows": random_window(rng)}
    return {"identifier": IDENTIFIER, "windows": [random_window(rng) for _ in range(BATCH)]}


class PredictUser(FastHttpUser):
    wait_time = constant(WAIT_SECONDS)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def predict(self) -> None:
        with self.client.post(
            "/predict", json=request_body(self.rng), headers=HEADERS, name="/predict", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                predictions = response.json().get("predictions")
            except ValueError:
                response.failure("the answer is not JSON")
                return
            if not predictions:
                response.failure("a 200 without predictions")
            else:
                response.success()


# ------------------------------------------------------------------------------------------- thresholds


@events.init_command_line_parser.add_listener
def threshold_options(parser: Any) -> None:
    parser.add_argument(
        "--max-failure-ratio",
        type=float,
        default=0.0,
        env_var="FLTS_LOCUST_MAX_FAILURE_RATIO",
        help="Fail the run when more than this fraction of its requests failed (0: any failure fails it)",
    )
    parser.add_argument(
        "--max-p99-ms",
        type=float,
        default=0.0,
        env_var="FLTS_LOCUST_MAX_P99_MS",
        help="Fail the run when its 99th percentile response time is above this many ms (0: no limit)",
    )


def threshold_problems(
    requests: int, failures: int, p99_ms: float, max_failure_ratio: float, max_p99_ms: float
) -> list[str]:
    """What makes a run fail: each crossed threshold, said with its measure and its limit (empty: it passes)."""
    if requests == 0:
        return ["no request was made"]
    problems = []
    if failures / requests > max_failure_ratio:
        ratio = f"{failures / requests:.2%} > {max_failure_ratio:.2%}"
        problems.append(f"{failures} of {requests} requests failed ({ratio})")
    if max_p99_ms > 0 and p99_ms > max_p99_ms:
        problems.append(f"the 99th percentile response time is {p99_ms:.0f} ms (> {max_p99_ms:g} ms)")
    return problems


@events.quitting.add_listener
def apply_thresholds(environment: Any, **_kwargs: Any) -> None:
    """Set the exit code from the thresholds; a worker leaves it alone (the master has every worker's requests)."""
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    problems = threshold_problems(
        total.num_requests,
        total.num_failures,
        total.get_response_time_percentile(0.99) or 0,
        options.max_failure_ratio,
        options.max_p99_ms,
    )
    log = logging.getLogger("flts.locust")
    for problem in problems:
        log.error("threshold crossed: %s", problem)
    if problems:
        environment.process_exit_code = options.exit_code_on_error
    elif not environment.runner.exceptions:
        # Failures within --max-failure-ratio pass (Locust alone fails a run on any failure); an exception raised in
        # this file still fails it, as Locust decides.
        log.info("thresholds met: %d requests, %d failed", total.num_requests, total.num_failures)
        environment.process_exit_code = 0
