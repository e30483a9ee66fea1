"""docker-compose.yaml, offline: the real Compose v2 binary validates it; the tests check the rest."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, COMPOSE_FILE, COMPOSE_SASL_FILE, ENV_EXAMPLE, REPO

from flts.kafka_users import ADMIN_USER, kafka_user
from flts.kafka_users import SERVICES as KAFKA_SERVICES
from flts.storage_users import SERVICES as STORAGE_SERVICES
from flts.storage_users import access_key

FLTS_SERVICES = ("gateway", "preprocess", "train-gru", "train-lstm", "nonml", "eval", "inference")
ONE_SHOTS = ("init", "upload-demo")
RAW = yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_config_is_valid(compose: Callable[..., Any]) -> None:
    compose("config", "-q")
    compose("--profile", "loadtest", "config", "-q")


@pytest.mark.parametrize(
    "credential",
    [
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "FLTS_ADMIN_API_KEY",
        *(f"{service.upper()}_S3_SECRET_KEY" for service in STORAGE_SERVICES),
    ],
)
def test_credentials_must_come_from_the_env_file(compose: Callable[..., Any], credential: str, tmp_path: Path) -> None:
    """Without a credential in the env file, `config` fails and names it: none has a default."""
    env_file = tmp_path / ".env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(line for line in lines if not line.startswith(f"{credential}=")) + "\n")
    result = compose("config", "-q", env_file=env_file, check=False)
    assert result.returncode != 0, f"compose accepted a missing {credential}"
    assert credential in result.stderr, result.stderr


def test_no_literal_credentials_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    user_names = {access_key(service) for service in STORAGE_SERVICES}  # a service's S3 user name is no secret
    for match in re.finditer(
        r"^\s*([A-Z_]*(PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|API_KEY|ADMIN_KEY)[A-Z_]*):\s*(\S+)", text, re.M
    ):
        if match.group(1) == "AWS_ACCESS_KEY_ID" and match.group(3) in user_names:
            continue
        assert "${" in match.group(3), f"{match.group(1)} is a literal in docker-compose.yaml"
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    for key in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "FLTS_ADMIN_API_KEY"):
        assert key in example, f".env.example lacks {key}"
    assert (REPO / ".gitignore").read_text().count(".env") >= 1, ".env must be git-ignored"


def test_only_init_holds_the_s3_root_key_and_each_service_has_its_own_user() -> None:
    services = RAW["services"]
    assert services["init"]["environment"]["AWS_ACCESS_KEY_ID"].startswith("${S3_ACCESS_KEY:?")
    assert set(STORAGE_SERVICES) == {name.split("-")[0] for name in FLTS_SERVICES} | {"mlflow"}
    for name in (*FLTS_SERVICES, "mlflow"):
        user = name.split("-")[0]  # train-gru and train-lstm share the train user
        env = services[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == access_key(user), name
        assert env["AWS_SECRET_ACCESS_KEY"].startswith(f"${{{user.upper()}_S3_SECRET_KEY:?"), name
        secret_var = f"{user.upper()}_S3_SECRET_KEY"
        assert services["init"]["environment"][secret_var].startswith(f"${{{secret_var}:?"), name
    root_key_holders = [
        name
        for name, service in services.items()
        for value in (service.get("environment") or {}).values()
        if str(value).startswith(("${S3_ACCESS_KEY", "${S3_SECRET_KEY"))
    ]
    assert sorted(set(root_key_holders)) == ["init", "minio"]


def test_images_are_versioned_never_latest(compose_model: dict[str, Any]) -> None:
    for name, service in compose_model["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: {image}"
        if "build" in service:
            assert image.endswith(":0.1.0"), f"{name}: built images carry the project version ({image})"
            assert service["build"]["context"] == str(REPO)
    for name in (*FLTS_SERVICES, *ONE_SHOTS, "mlflow"):
        assert "${FLTS_VERSION:-0.1.0}" in RAW["services"][name]["image"], name


def test_every_flts_service_builds_from_the_one_dockerfile(compose_model: dict[str, Any]) -> None:
    """The services build from the root Dockerfile (args pick the service), MLflow from its own."""
    services = compose_model["services"]
    for name in (*FLTS_SERVICES, *ONE_SHOTS):
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name
    assert services["mlflow"]["build"]["dockerfile"] == "deploy/mlflow/Dockerfile"
    assert services["train-gru"]["build"] == services["train-lstm"]["build"], "one train image for both"
    env = services["train-lstm"]["environment"]
    assert env["MODEL_TYPE"] == "LSTM" and services["train-gru"]["environment"]["MODEL_TYPE"] == "GRU"


def test_torch_index_defaults_to_the_cpu_build_and_can_be_emptied(compose: Callable[..., Any], tmp_path: Path) -> None:
    """Users get PyTorch's CPU index; an empty TORCH_INDEX_URL (PyPI only) reaches the build as empty."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "TORCH_INDEX_URL=\n")
    for env, expected in ((ENV_EXAMPLE, "https://download.pytorch.org/whl/cpu"), (env_file, "")):
        model = json.loads(compose("config", "--format", "json", env_file=env).stdout)
        for name in ("train-gru", "train-lstm"):
            assert model["services"][name]["build"]["args"]["TORCH_INDEX_URL"] == expected, name


def test_host_ports_are_configurable(compose: Callable[..., Any], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "FLTS_GATEWAY_PORT=18000\nFLTS_INFERENCE_PORT=18001\n")
    model = json.loads(compose("config", "--format", "json", env_file=env_file).stdout)
    published = {name: model["services"][name]["ports"][0]["published"] for name in ("gateway", "inference")}
    assert published == {"gateway": "18000", "inference": "18001"}


def test_start_order_is_guarded_by_health(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
            if condition["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", f"{dependency} must be a one-shot"
    for name in ("kafka", "minio", "postgres", "mlflow", "gateway", "inference"):
        assert "healthcheck" in services[name], name
    for name in FLTS_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy", name
        assert depends["init"]["condition"] == "service_completed_successfully", name
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    upload = services["upload-demo"]
    assert upload["command"][:4] == ["python", "-m", "flts.cli", "upload-demo"]
    assert upload["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert services["init"]["command"] == ["python", "-m", "flts.cli", "init"]


def test_backbone_images_are_the_pinned_ones(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["minio"]["image"] == "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller" and kafka["CLUSTER_ID"]
    assert all(k.startswith("KAFKA_") for k in kafka if k != "CLUSTER_ID")


def test_flts_containers_are_locked_down(compose_model: dict[str, Any]) -> None:
    for name in (*FLTS_SERVICES, *ONE_SHOTS, "mlflow"):
        service = compose_model["services"][name]
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert any(str(t).startswith("/tmp") for t in service.get("tmpfs", [])), name


def test_grafanas_dashboard_and_provisioning_are_mounted_from_the_charts_files(compose_model: dict[str, Any]) -> None:
    """.helm/files is the one home of the deploy-only assets: compose mounts them, it keeps no copy."""
    volumes = compose_model["services"]["grafana"]["volumes"]
    binds = {v["target"]: v["source"] for v in volumes if v["type"] == "bind"}
    files = CHART / "files" / "grafana"
    assert binds == {
        "/etc/grafana/provisioning/datasources/prometheus.yaml": str(files / "datasource.yaml"),
        "/etc/grafana/provisioning/dashboards/flts.yaml": str(files / "dashboards.yaml"),
        "/var/lib/grafana/dashboards/flts.json": str(files / "flts.json"),
    }
    assert all(Path(source).is_file() for source in binds.values())


def test_observability_and_load_test(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert {"prometheus", "grafana"} <= set(services)
    for name in ("locust-master", "locust-worker"):
        assert services[name]["profiles"] == ["loadtest"], name
        mounts = {v["target"]: v["source"] for v in services[name]["volumes"]}
        assert mounts["/mnt/locust/locustfile.py"] == str(CHART / "files" / "locustfile.py"), name
    assert "--master" in services["locust-master"]["command"]
    assert "--worker" in services["locust-worker"]["command"]
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {n for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    assert set(FLTS_SERVICES) <= scraped


def test_both_apis_require_keys_and_their_clients_send_the_admin_key(compose: Callable[..., Any]) -> None:
    """Auth is on in compose: the admin key from .env, tenants' hashes from config/api-keys.yaml; the
    one-shot uploader and Locust send the admin key as FLTS_API_KEY."""
    model = yaml.safe_load(compose("--profile", "loadtest", "config", "--format", "yaml").stdout)
    admin_key = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line.startswith("FLTS_"))[
        "FLTS_ADMIN_API_KEY"
    ]
    for name in ("gateway", "inference"):
        service = model["services"][name]
        assert service["environment"]["AUTH_ENABLED"] == "true"
        assert service["environment"]["AUTH_ADMIN_KEY"] == admin_key
        mounts = {m["target"]: m["source"] for m in service["configs"]}
        assert mounts[service["environment"]["AUTH_KEYS_FILE"]] == "api-keys"
    assert Path(model["configs"]["api-keys"]["file"]) == REPO / "config" / "api-keys.yaml"
    for name in ("upload-demo", "locust-master", "locust-worker"):
        assert model["services"][name]["environment"]["FLTS_API_KEY"] == admin_key


def test_the_shipped_keys_file_is_valid_and_grants_nothing() -> None:
    from flts.auth import KeysFile

    assert KeysFile.model_validate(yaml.safe_load((REPO / "config" / "api-keys.yaml").read_text())).principals == []


# ------------------------------------------------------------------------- docker-compose.sasl.yaml


@pytest.fixture(scope="module")
def sasl_model(compose: Callable[..., Any]) -> dict[str, Any]:
    return json.loads(compose("config", "--format", "json", overrides=(COMPOSE_SASL_FILE,)).stdout)


def test_with_the_sasl_override_every_kafka_client_logs_in_as_its_own_user(sasl_model: dict[str, Any]) -> None:
    """Each service's Kafka user is the one flts.kafka_users grants its ACLs to, with its own password."""
    services = sasl_model["services"]
    for name in FLTS_SERVICES:
        env = services[name]["environment"]
        service = "train" if name.startswith("train-") else name
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        assert env["KAFKA_SASL_USERNAME"] == kafka_user(service), name
        assert env["KAFKA_SASL_PASSWORD"] == _example_value(f"{service.upper()}_KAFKA_PASSWORD"), name
    init = services["init"]["environment"]
    assert init["KAFKA_SASL_USERNAME"] == ADMIN_USER
    assert {f"{s.upper()}_KAFKA_PASSWORD" for s in KAFKA_SERVICES} <= set(init)
    broker = services["kafka"]["environment"]
    assert broker["KAFKA_SUPER_USERS"] == f"User:{ADMIN_USER};User:ANONYMOUS"
    assert broker["KAFKA_LISTENERS"].endswith("CONTROLLER://127.0.0.1:9093"), "the controller must stay on loopback"
    assert "PLAINTEXT://:" not in broker["KAFKA_LISTENERS"].replace("SASL_PLAINTEXT", "")
    assert services["upload-demo"]["environment"].get("KAFKA_SASL_USERNAME") is None  # it speaks HTTP only


KAFKA_PASSWORDS = ["KAFKA_ADMIN_PASSWORD", *(f"{s.upper()}_KAFKA_PASSWORD" for s in KAFKA_SERVICES)]


@pytest.mark.parametrize("credential", KAFKA_PASSWORDS)
def test_the_sasl_override_needs_every_kafka_password(compose: Callable[..., Any], credential: str, tmp_path: Path):
    env_file = tmp_path / ".env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(line for line in lines if not line.startswith(f"{credential}=")) + "\n")
    result = compose("config", "-q", env_file=env_file, check=False, overrides=(COMPOSE_SASL_FILE,))
    assert result.returncode != 0, f"compose accepted a missing {credential}"
    assert credential in result.stderr, result.stderr


def _example_value(name: str) -> str:
    return next(line.split("=", 1)[1] for line in ENV_EXAMPLE.read_text().splitlines() if line.startswith(f"{name}="))
