"""The status page in a real headless Chromium, and the CLI's plot, status and predict, on the real stack.

The browser is Debian's `chromium` (installed with apt-get on first use, as root; tests/compose does the
same for Docker). Its `--dump-dom` is the DOM after the page's scripts ran; its `--screenshot` is kept
under test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from debian_packages import debian_binaries
from typer.testing import CliRunner

from flts.cli import app

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (needs root, as CI has)."""
    try:
        (binary,) = debian_binaries("chromium", "chromium")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return binary


def _browse(chromium: str, url: str, *action: str, tmp_path: Path, budget_ms: int = 3_000) -> str:
    """Chromium, headless, on ``url`` with its scripts given ``budget_ms`` of (virtual) time; returns stdout."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--virtual-time-budget={budget_ms}",
            "--window-size=1280,2000",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def _plotted(html: str) -> dict[str, int]:
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg, "no plot on the page"
    groups = ET.fromstring(svg.group(0)).iter(f"{SVG}g")
    return {g.get("data-name").split(" (")[0]: int(g.get("data-points")) for g in groups if g.get("data-points")}


def test_the_status_page_shows_the_lineage_its_leaderboard_and_a_forecast_plot(first_run, services, chromium, tmp_path):
    config_hash, champion = first_run["upload"]["config_hash"], first_run["status"]["champion"]
    index = httpx.get(f"{services.gateway_url}/ui", timeout=60).text  # server-rendered: no script to run
    assert f"/ui/identifiers/global/lineages/{config_hash}" in index
    assert re.search(r'class="count">\d+<', index)

    url = f"{services.gateway_url}/ui/identifiers/global/lineages/{config_hash}"
    page = _browse(chromium, url, "--dump-dom", tmp_path=tmp_path)
    stages = ("preprocessing", "GRU", "LSTM", "LIGHTGBM", "THETA", "PERSISTENCE", "SEASONAL_NAIVE", "eval", "promotion")
    for stage in stages:
        assert f'data-stage="{stage}"' in page
    assert "epoch 3/3" in page  # the networks' progress, from the metrics they logged each epoch
    board = page.split('id="leaderboard"')[1].split("</table>")[0]
    assert set(re.findall(r"<td>([A-Z_]+)</td>", board)) == {r["model_type"] for r in first_run["status"]["training"]}
    points = _plotted(page)
    assert set(points) == {"actual", champion["model_type"], "PERSISTENCE"}
    assert min(points.values()) > 50

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page-lineage.png"
    screenshot.unlink(missing_ok=True)
    _browse(chromium, url, f"--screenshot={screenshot}", tmp_path=tmp_path)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000

    history = httpx.get(f"{services.gateway_url}/ui/identifiers/global", timeout=60).text
    assert f"version <b>{champion['model_version']}</b>" in history and "Promotion history" in history


def test_the_lineage_page_updates_itself_while_the_lineage_runs(client, dataset, services, chromium, tmp_path):
    """A new identifier's lineage, opened right after its upload: the page's script fetches the stages as
    they happen, so after a while in the browser it shows models the server's first answer did not."""
    upload = client.upload(*dataset, identifier=f"ui-live-{uuid.uuid4().hex[:6]}")
    url = f"{services.gateway_url}/ui/identifiers/{upload['identifier']}/lineages/{upload['config_hash']}"
    deadline = time.monotonic() + 60
    while (first := httpx.get(url, timeout=30)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.5)  # the lineage exists once preprocess has written its first object or a run started
    assert first.status_code == 200, first.text
    assert "data-final" not in first.text.split('id="live"')[1].split("</section>")[0]
    # 60 s of the page's time (its 2 s polls; virtual time stands still while a fetch is under way)
    page = _browse(chromium, url, "--dump-dom", tmp_path=tmp_path, budget_ms=60_000)
    finished = set(re.findall(r'data-stage="(\w+)">\s*<b>\w+</b> <span class="badge">FINISHED', page))
    assert finished - set(re.findall(r'data-stage="(\w+)">\s*<b>\w+</b> <span class="badge">FINISHED', first.text))


def test_the_cli_plots_the_forecast_follows_the_newest_lineage_and_predicts_without_a_file(
    first_run, services, tmp_path
):
    env = {"FLTS_GATEWAY_URL": services.gateway_url, "FLTS_INFERENCE_URL": services.inference_url}
    runner = CliRunner()
    champion = first_run["status"]["champion"]

    out = tmp_path / "forecast.svg"
    plotted = runner.invoke(app, ["plot", "--target", "down", "--out", str(out)], env=env)
    assert plotted.exit_code == 0, plotted.stdout
    groups = {g.get("data-name").split(" (")[0]: g for g in ET.parse(out).iter(f"{SVG}g") if g.get("data-points")}
    assert set(groups) == {"actual", champion["model_type"], "PERSISTENCE"}
    assert int(groups["actual"].get("data-points")) > 50
    refused = runner.invoke(app, ["plot", "--target", "sideways", "--out", str(out)], env=env)
    assert refused.exit_code == 1 and "not one of this model's targets" in refused.stdout
    unknown = runner.invoke(app, ["plot", "--out", str(tmp_path / "forecast.gif")], env=env)
    assert unknown.exit_code == 2 and "--out forecast.svg" in unknown.stdout

    status = runner.invoke(app, ["status", "--identifier", "global"], env=env)
    assert status.exit_code == 0, status.stdout
    assert "The newest lineage of global" in status.stdout and "GRU" in status.stdout and "epoch 3/3" in status.stdout

    forecast = runner.invoke(app, ["predict", "--identifier", "global", "--steps", "3", "--json"], env=env)
    assert forecast.exit_code == 0, forecast.stdout
    answer = json.loads(forecast.stdout)
    assert answer["model_version"] == champion["model_version"] and len(answer["predictions"]) == 3
