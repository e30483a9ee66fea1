"""The status page and /forecasts through FastAPI's TestClient, on a stand-in for the store and MLflow.

What is checked here is what the routes make of what they read: pages that name the lineages, stages,
leaderboard columns and champion, a plot with the model's and persistence's points, and a 4xx that says
what to do for every request that cannot be answered. The real store and MLflow are in tests/e2e.
"""

from __future__ import annotations

import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from flts.auth import key_hash, new_key
from flts.backtest import TEST_FORECAST_ARTIFACT, forecast_frame
from flts.config import ModelsConfig, PipelineConfig, RecurrentConfig
from flts.data.metadata import PreprocessingMetadata
from flts.deadletters import Letter
from flts.layout import METADATA_FILE, champion_pointer_uri, decision_uri, processed_uri
from flts.messages import DeadLetter
from flts.records import LineageStatus, LineageSummary
from flts.settings import GatewaySettings
from flts.tracking import RunSummary
from gateway_container import ui
from gateway_container.deps import get_gateway
from gateway_container.gateway import Gateway
from gateway_container.service import create_app

HASH = "c" * 64
TARGETS = ["down", "up"]
SETTINGS = GatewaySettings(auth_enabled=False)
NOW_MS = int(time.time() * 1000)


def _run(model_type: str, rmse: float, status: str = "FINISHED", **metrics: float) -> RunSummary:
    values = {"test_rmse": rmse, "test_mae": rmse / 2, "test_mse": rmse**2, "test_rmse__down": rmse * 3, **metrics}
    return RunSummary(
        run_id=f"run-{model_type.lower()}",
        model_type=model_type,
        identifier="cell-7",
        status=status,
        metrics=values,
        start_time_ms=NOW_MS,
        end_time_ms=NOW_MS + 5_000 if status == "FINISHED" else None,
        error=None,
        config_hash=HASH,
    )


def _forecasts(offset: float) -> Any:
    times = np.arange(np.datetime64("2024-03-01T00:00"), np.datetime64("2024-03-01T04:00"), np.timedelta64(2, "m"))
    actual = np.stack([np.sin(np.arange(len(times)) / 5), np.cos(np.arange(len(times)) / 5)], axis=-1)[:, None, :]
    return forecast_frame(times.astype("datetime64[ns]")[:, None], actual + offset, actual, TARGETS)


@dataclass
class StubTracker:
    runs: list[RunSummary]
    kept: dict[str, Any]
    champion_run: str | None = "run-gru"

    def lineage_runs(self, config_hash: str) -> list[RunSummary]:
        return [r for r in self.runs if r.config_hash == config_hash]

    def run_summary(self, run_id: str) -> RunSummary:
        return next(r for r in self.runs if r.run_id == run_id)

    def champion(self, identifier: str) -> Any:
        if self.champion_run is None:
            return None
        return type("Version", (), {"run_id": self.champion_run, "version": "3"})()

    def download(self, run_id: str, artifact_path: str, destination: str) -> str:
        from mlflow.exceptions import MlflowException

        if run_id not in self.kept or artifact_path != TEST_FORECAST_ARTIFACT:
            raise MlflowException(f"no artifact {artifact_path} in {run_id}")
        path = Path(destination) / "forecast.parquet"
        self.kept[run_id].to_parquet(path)
        return str(path)

    __hash__ = object.__hash__


@dataclass
class StubStore:
    history: list[dict[str, Any]]

    def folders(self, bucket: str, prefix: str = "") -> list[str]:
        return ["cell-7"]

    def list(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        return [{"Key": f"{prefix}{i:04d}.json"} for i in range(len(self.history))]

    def get_json(self, uri: str) -> dict[str, Any]:
        return self.history[int(uri.rsplit("/", 1)[1].split(".")[0])]


@dataclass
class StubGateway:
    tracker: StubTracker
    objects: dict[str, Any] = field(default_factory=dict)
    settings: GatewaySettings = field(default_factory=lambda: SETTINGS)
    config: PipelineConfig = field(default_factory=PipelineConfig)

    @property
    def store(self) -> StubStore:
        return StubStore([self.objects[champion_pointer_uri(SETTINGS, "cell-7", HASH)]])

    def json_if_exists(self, uri: str) -> dict[str, Any] | None:
        return self.objects.get(uri)

    record_if_exists = Gateway.record_if_exists
    champion_pointer = Gateway.champion_pointer
    eval_decision = Gateway.eval_decision
    lineage_status = Gateway.lineage_status

    def lineages(self, identifier: str, limit: int | None = None) -> list[LineageSummary]:
        return [LineageSummary(config_hash=HASH, preprocessed_at="2026-12-02T04:00:00", outcome="promoted", reason="r")]


def _promoted(gateway: StubGateway, metadata: PreprocessingMetadata) -> StubGateway:
    """The lineage as preprocess and eval leave it: its metadata (from a real preprocess run) and its champion."""
    stored = metadata.model_copy(
        update={
            "rows": {"train": 100, "validation": 20, "test": 20},
            "target_columns": TARGETS,
            "config": PipelineConfig(models=ModelsConfig(recurrent=RecurrentConfig(epochs=10))),
        }
    )
    gateway.objects[processed_uri(SETTINGS, "cell-7", HASH, METADATA_FILE)] = stored.to_json()
    gateway.objects[champion_pointer_uri(SETTINGS, "cell-7", HASH)] = {
        "config_hash": HASH,
        "identifier": "cell-7",
        "model_type": "GRU",
        "run_id": "run-gru",
        "registered_model": "flts-cell-7",
        "model_version": "3",
        "score": 0.1,
        "reason": "best of 3",
        "decided_at": "2026-12-02T04:05:00+00:00",
        "decided_at_ms": 1_796_184_300_000,
    }
    return gateway


@pytest.fixture
def gateway(processed) -> StubGateway:
    runs = [_run("GRU", 0.1), _run("PERSISTENCE", 0.3), _run("PROPHET", 0.2)]
    tracker = StubTracker(runs, {"run-gru": _forecasts(0.1), "run-persistence": _forecasts(0.5)})
    return _promoted(StubGateway(tracker), processed.metadata)


def _client(gateway: StubGateway, monkeypatch: pytest.MonkeyPatch, settings: GatewaySettings) -> TestClient:
    """The app with the stand-in behind its routes (enter it: `with _client(...) as client`, so the lifespan runs)."""
    ui.TEST_FORECASTS.clear()
    letter = DeadLetter(
        source_topic="training-data", partition=0, offset=4, key=None, value_b64="", headers={},
        reason="not a TrainingData: field required", consumer_group="flts-eval",
    )  # fmt: skip
    monkeypatch.setattr(ui, "latest_letters", lambda settings: (3, [Letter(0, 9, letter)]))
    app = create_app(settings)
    app.dependency_overrides[get_gateway] = lambda: gateway
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(gateway, monkeypatch) -> Iterator[TestClient]:
    with _client(gateway, monkeypatch, SETTINGS) as client:
        yield client


def _series_points(html: str) -> dict[str, int]:
    svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
    groups = ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}g")
    return {g.get("data-name").split(" (")[0]: int(g.get("data-points")) for g in groups if g.get("data-points")}


def test_the_index_lists_identifiers_their_lineages_and_the_dead_letters(client):
    page = client.get("/ui")
    assert page.status_code == 200
    assert f"/ui/identifiers/cell-7/lineages/{HASH}" in page.text
    assert 'class="count">3<' in page.text and "field required" in page.text


def test_the_identifier_page_shows_the_champion_and_its_promotion_history(client):
    page = client.get("/ui/identifiers/cell-7")
    assert page.status_code == 200
    champion = page.text.split('id="champion"')[1].split("</section>")[0]
    assert "GRU" in champion and "3" in champion and "best of 3" in champion
    assert "Promotion history (1)" in page.text
    assert _series_points(page.text) == {"actual": 120, "GRU": 120, "PERSISTENCE": 120}  # the champion's forecast


def test_the_lineage_page_shows_every_stage_the_leaderboard_and_a_plot_with_persistence(client):
    page = client.get(f"/ui/identifiers/cell-7/lineages/{HASH}")
    assert page.status_code == 200
    for stage in ("preprocessing", "GRU", "PERSISTENCE", "PROPHET", "eval", "promotion"):
        assert f'data-stage="{stage}"' in page.text
    board = page.text.split('id="leaderboard"')[1].split("</table>")[0]
    assert [m for m in re.findall(r"<td>([A-Z_]+)</td>", board)] == ["GRU", "PROPHET", "PERSISTENCE"]
    assert board.count('class="not-servable"') == 1 and "the inference image carries no Prophet" in board
    assert _series_points(page.text) == {"actual": 120, "GRU": 120, "PERSISTENCE": 120}
    assert "data-final" in page.text  # decided and nothing running: the page stops polling


def test_the_leaderboard_shows_one_columns_metrics(client):
    page = client.get(f"/ui/identifiers/cell-7/lineages/{HASH}/live", params={"column": "down"})
    assert "Leaderboard: down" in page.text
    assert "<td>0.3</td>" in page.text  # GRU's test_rmse__down, not its mean test_rmse of 0.1


def test_the_leaderboard_shows_the_columns_each_model_wins_on_validation(client, gateway):
    per_column = {"validation_rmse__down": 0.1, "validation_mae__down": 0.1, "validation_mse__down": 0.01}
    worse_up = {"validation_rmse__up": 0.5, "validation_mae__up": 0.5, "validation_mse__up": 0.25}
    better_up = {"validation_rmse__up": 0.2, "validation_mae__up": 0.2, "validation_mse__up": 0.04}
    gateway.tracker.runs[:] = [_run("GRU", 0.1, **per_column, **worse_up), _run("PERSISTENCE", 0.3, **better_up)]
    page = client.get(f"/ui/identifiers/cell-7/lineages/{HASH}/live")
    wins = re.findall(r'<td class="wins">([^<]*)</td>', page.text.split('id="leaderboard"')[1])
    assert wins == ["down", "up"]  # GRU ranks first and wins down; persistence wins up


def test_a_training_network_shows_its_epoch_progress_and_keeps_the_page_polling(client, gateway):
    gateway.tracker.runs.append(
        _run("LSTM", 0.0, status="RUNNING", epoch=4, train_loss=0.02, val_loss=0.03, elapsed_seconds=12.5)
    )
    gateway.tracker.runs[:] = [r for r in gateway.tracker.runs if r.model_type != "GRU"] + [gateway.tracker.runs[0]]
    live = client.get(f"/ui/identifiers/cell-7/lineages/{HASH}/live").text
    lstm = live.split('data-stage="LSTM"')[1].split("</li>")[0]
    assert '<progress value="4" max="10">' in lstm and "epoch 4/10" in lstm and "12.5 s" in lstm
    assert "data-final" not in live


def test_the_plot_follows_the_chosen_target_model_and_time_range(client):
    answer = client.get(
        "/forecasts/cell-7",
        params={"target": "up", "model_type": "PROPHET", "start": "2024-03-01T01:00", "end": "2024-03-01T01:58"},
    )
    assert answer.status_code == 404 and "kept no test forecasts" in answer.json()["detail"]
    answer = client.get(
        "/forecasts/cell-7", params={"target": "up", "start": "2024-03-01T01:00", "end": "2024-03-01T01:58"}
    ).json()
    assert answer["model_type"] == "GRU" and answer["config_hash"] == HASH and answer["targets"] == TARGETS
    assert [s["name"] for s in answer["series"]] == ["actual", "GRU", "PERSISTENCE"]
    assert [len(s["times"]) for s in answer["series"]] == [30, 30, 30]
    assert answer["series"][1]["mae"] == pytest.approx(0.1) and answer["series"][2]["mae"] == pytest.approx(0.5)
    svg = client.get(f"/ui/identifiers/cell-7/lineages/{HASH}/forecast.svg", params={"target": "up"})
    assert svg.headers["content-type"] == "image/svg+xml"
    ET.fromstring(svg.text)


@pytest.mark.parametrize(
    "params, status, fragment",
    [
        ({"target": "sideways"}, 422, "not one of this model's targets"),
        ({"step": 2}, 422, "horizon 1"),
        ({"start": "yesterday-ish"}, 422, "ISO 8601"),
        ({"model_type": "LSTM"}, 404, "no finished LSTM run"),
        ({"config_hash": "nothex"}, 422, "64 lowercase hex"),
    ],
)
def test_a_forecast_request_that_cannot_be_answered_says_why(client, params, status, fragment):
    answer = client.get("/forecasts/cell-7", params=params)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["detail"]


def test_an_identifier_without_a_champion_is_told_to_upload_first(client, gateway):
    gateway.tracker.champion_run = None
    answer = client.get("/forecasts/cell-7")
    assert answer.status_code == 404 and "no champion yet" in answer.json()["detail"]


def test_the_page_script_is_served_from_the_package_and_nothing_else_is(client):
    script = client.get("/ui/static/ui.js")
    assert script.status_code == 200 and "data-poll" in script.text
    assert client.get("/ui/static/../service.py").status_code == 404
    assert "http" not in client.get(f"/ui/identifiers/cell-7/lineages/{HASH}").text.split("<main>")[0]


def test_with_auth_on_the_pages_ask_for_a_key_and_show_a_tenant_only_its_identifiers(gateway, monkeypatch):
    tenant, admin = new_key(), new_key()
    keys = Path(tempfile.mkdtemp()) / "keys.yaml"
    keys.write_text(f"principals: [{{name: t, sha256: {key_hash(tenant)}, identifiers: ['other-*']}}]")
    settings = GatewaySettings(auth_enabled=True, auth_keys_file=keys, auth_admin_key=admin)
    with _client(gateway, monkeypatch, settings) as client:
        lineage = f"/ui/identifiers/cell-7/lineages/{HASH}"

        to_login = client.get(lineage, follow_redirects=False)
        assert to_login.status_code == 303 and to_login.headers["location"] == f"/ui/login?next={lineage}"
        assert 'type="password"' in client.get(to_login.headers["location"]).text
        assert client.get("/forecasts/cell-7").status_code == 401
        assert client.get(lineage, headers={"X-API-Key": tenant}).status_code == 403
        assert client.get("/forecasts/cell-7", headers={"X-API-Key": tenant}).status_code == 403
        index = client.get("/ui", headers={"X-API-Key": tenant}).text
        assert "cell-7" not in index and "Dead letters" not in index  # another tenant's; every tenant's
        assert client.get(lineage, headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert "Dead letters" in client.get("/ui", headers={"X-API-Key": admin}).text
        client.cookies.set("flts_api_key", admin)  # what the login page's script keeps in the browser
        assert client.get(lineage).status_code == 200


def test_a_decided_lineage_s_plot_stops_polling_even_without_a_champion_to_draw(client, gateway):
    """A lineage superseded or without a winner never gets a champion: once eval has decided it, the plot is final,
    whether it draws the best model or says there is nothing to draw."""
    gateway.objects.pop(champion_pointer_uri(SETTINGS, "cell-7", HASH))
    gateway.tracker.kept.clear()
    plot = f"/ui/identifiers/cell-7/lineages/{HASH}/plot"
    assert "data-final" not in client.get(plot).text, "an undecided lineage's plot stopped polling"
    decided = {"outcome": "no_winner", "reason": "r", "decided_at_ms": 1}
    gateway.objects[decision_uri(SETTINGS, "cell-7", HASH)] = decided
    assert "data-final" in client.get(plot).text


def test_a_lineage_s_status_shows_its_champion_record_with_exactly_the_keys_eval_stored(client, gateway):
    answer = client.get(f"/runs/{HASH}", params={"identifier": "cell-7"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["champion"] == gateway.objects[champion_pointer_uri(SETTINGS, "cell-7", HASH)]
    board = answer.json()["leaderboard"]
    assert [entry["model_type"] for entry in board] == ["GRU", "PROPHET", "PERSISTENCE"]
    assert "not_servable_because" not in board[0] and board[1]["not_servable_because"]
    assert LineageStatus.parse(answer.json(), "GET /runs").champion.model_version == "3"
