"""The e2e modules share one pipeline run: every service a process with a small model config, and one upload
of a small generated dataset (the first lineage), so the whole of tests/e2e runs in a few minutes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rich.console import Console

from flts.client import FltsClient
from flts.data.generate import write_dataset
from flts.settings import CommonSettings
from flts.stack import manager


@pytest.fixture(scope="session")
def pipeline_config(tmp_path_factory) -> Path:
    """The shipped config with smaller models, so training takes seconds."""
    config = yaml.safe_load((Path(__file__).parents[2] / "config" / "pipeline.yaml").read_text())
    config["models"]["recurrent"].update(hidden_size=32, num_layers=1, epochs=3)
    config["models"]["prophet"]["max_fit_rows"] = 2000
    config["evaluation"]["decision_timeout_seconds"] = 240
    path = tmp_path_factory.mktemp("config") / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def services(stack_config, stack_env, pipeline_config, monkeypatch_session):
    """The services, started afresh with the small pipeline config, and stopped after the session."""
    console = Console(stderr=True)
    manager.down_services(stack_config, console)
    monkeypatch_session.setenv("PIPELINE_CONFIG", str(pipeline_config))
    monkeypatch_session.setenv("SESSION_TIMEOUT_MS", "10000")
    manager.up(stack_config, console, services=True)
    yield stack_config
    manager.down_services(stack_config, console)


@pytest.fixture(scope="session")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def settings(common_settings) -> CommonSettings:
    return common_settings


@pytest.fixture(scope="session")
def client(services) -> FltsClient:
    return FltsClient(services.gateway_url, services.inference_url)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    return write_dataset(tmp_path_factory.mktemp("data"), train_rows=3_000, test_rows=600, seed=5)


@pytest.fixture(scope="session")
def first_run(client, dataset) -> dict:
    train, test = dataset
    upload = client.upload(train, test)
    status = client.wait_for_champion(upload["config_hash"], timeout=400)
    return {"upload": upload, "status": status.to_json()}  # as the gateway answered it
