"""One source of configuration: the settings classes, docker compose and the Helm chart must agree.

What a service reads is derived from its settings class in flts.config (`model_fields`, env name =
field name upper-cased), so a field the lead adds to a service shows up here at once. The test fails
when a variable a service reads is missing from compose or the chart, when one is set that no service
reads (outside the small allow-list below), when compose and the chart give a service different
values, or when the pipeline config (or another file the chart carries a copy of) differs.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, RENDERS, REPO, SERVICE_SETTINGS

from flts import settings as flts_settings
from flts.config import load_pipeline_config
from flts.kafka_users import SERVICES as KAFKA_SERVICES
from flts.storage_users import SERVICES

# Set although no settings field reads them: each read by a library, with the reason.
ALLOWED_EXTRA_ENV = {
    "MLFLOW_S3_ENDPOINT_URL": "read by MLflow's S3 artifact client, for a client that reaches S3 directly",
    "PYTHONUNBUFFERED": "read by the Python interpreter: logs leave the container at once",
}
# Read by every service but set only with an option on: Kafka's SASL login (docker-compose.sasl.yaml,
# kafka.sasl.enabled; tests/deploy checks each service's login there) and a CA for SASL_SSL.
OPTION_ENV = {
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA_LOCATION",
    *(f"{service.upper()}_KAFKA_PASSWORD" for service in KAFKA_SERVICES),  # init's, to make the users
}
# Values that differ by nature between compose and a cluster: where things are, and the credentials.
PER_ENVIRONMENT = {
    "KAFKA_BOOTSTRAP_SERVERS",
    "S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
# Names the local stack relies on by default (it sets only endpoints and credentials): compose and
# the chart must use the settings defaults for them, so all three runs agree.
CONTRACT_PREFIXES = ("TOPIC_", "BUCKET_")
CONTRACT_NAMES = {"MLFLOW_EXPERIMENT", "REGISTERED_MODEL_PREFIX", "CONSUMER_GROUP"}
SECRET = object()  # a value that comes from a Secret (compared by presence only)

# Files the chart carries a copy of (Helm reads only files inside the chart): copy -> the source
# (`make sync-chart-config`). The pipeline config: the services' images and the local stack read it from config/.
# The locustfile: locust/ is its home beside its README; compose mounts the chart's copy. The other deploy-only
# assets (Grafana) live in .helm/files alone; compose mounts them from there.
CHART_COPIES = {
    "files/pipeline.yaml": "config/pipeline.yaml",
    "files/locustfile.py": "locust/locustfile.py",
}


def settings_env(service: str) -> set[str]:
    model = getattr(flts_settings, SERVICE_SETTINGS[service])
    return {name.upper() for name in model.model_fields}


def settings_default(service: str, name: str, env: dict[str, Any]) -> str | None:
    """The default a service would use for ``name`` (model_validate: no environment is read)."""
    model = getattr(flts_settings, SERVICE_SETTINGS[service])
    known = {k.lower(): v for k, v in env.items() if k == "MODEL_TYPE"}
    value = getattr(model.model_validate(known), name.lower(), None)
    return None if value is None else str(value)


def env_drift(service: str, compose_env: dict[str, Any], chart_env: dict[str, Any]) -> list[str]:
    """Every disagreement between a service's settings, its compose environment and its chart environment."""
    expected = settings_env(service)
    problems = []
    for where, env in (("docker-compose.yaml", compose_env), ("the Helm chart", chart_env)):
        for name in sorted(expected - set(env) - OPTION_ENV):
            problems.append(f"{service}: {name} is read by {SERVICE_SETTINGS[service]} but not set in {where}")
        for name in sorted(set(env) - expected - set(ALLOWED_EXTRA_ENV)):
            problems.append(f"{service}: {name} is set in {where} but {SERVICE_SETTINGS[service]} does not read it")
    for name in sorted((set(compose_env) & set(chart_env)) - PER_ENVIRONMENT):
        left, right = compose_env[name], chart_env[name]
        if SECRET not in (left, right) and str(left) != str(right):
            problems.append(f"{service}: {name} is {left!r} in docker-compose.yaml but {right!r} in the chart")
    for name in sorted(set(compose_env) & expected):
        if name.startswith(CONTRACT_PREFIXES) or name in CONTRACT_NAMES:
            default = settings_default(service, name, compose_env)
            if default is not None and str(compose_env[name]) != default:
                problems.append(
                    f"{service}: {name}={compose_env[name]!r} but the local stack uses the default {default!r}"
                )
    return problems


# ------------------------------------------------------------------------------------------- extraction


def compose_env(compose_model: dict[str, Any], service: str) -> dict[str, Any]:
    env = compose_model["services"][service].get("environment") or {}
    secrets = {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AUTH_ADMIN_KEY"}
    return {k: (SECRET if k in secrets else v) for k, v in env.items()}


def chart_env(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    """A component's container environment, with envFrom ConfigMaps/Secrets resolved."""
    workloads = [
        o
        for o in objects
        if o["kind"] in {"Deployment", "Job"}
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(workloads) == 1, f"expected one workload for {component}, found {len(workloads)}"
    container = workloads[0]["spec"]["template"]["spec"]["containers"][0]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_name[("ConfigMap", source["configMapRef"]["name"])]["data"])
        elif "secretRef" in source:
            secret = by_name.get(("Secret", source["secretRef"]["name"]), {"data": {}})
            env.update({k: SECRET for k in secret.get("data", {})})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", SECRET)
    return env


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_service_environment_agrees(
    service: str, compose_model: dict[str, Any], render: Callable[..., list[dict[str, Any]]]
) -> None:
    problems = env_drift(service, compose_env(compose_model, service), chart_env(render(), service))
    assert not problems, "\n".join(problems)


def test_drift_check_catches_drift(compose_model: dict[str, Any], render: Callable[..., list[dict[str, Any]]]) -> None:
    """The checker is not vacuous: each kind of drift is reported."""
    good_compose, good_chart = compose_env(compose_model, "eval"), chart_env(render(), "eval")
    read = sorted(settings_env("eval"))[0]
    missing = {k: v for k, v in good_compose.items() if k != read}
    assert any("not set in docker-compose.yaml" in p for p in env_drift("eval", missing, good_chart))
    missing_chart = {k: v for k, v in good_chart.items() if k != read}
    assert any("not set in the Helm chart" in p for p in env_drift("eval", good_compose, missing_chart))
    unread = {**good_chart, "EVAL_TIMEOUT_SECONDS": "3"}
    assert any("does not read it" in p for p in env_drift("eval", good_compose, unread))
    changed = {**good_chart, "TOPIC_MODEL_TRAINING": "model-training-v2"}
    assert any("TOPIC_MODEL_TRAINING" in p for p in env_drift("eval", good_compose, changed))
    renamed = {**good_compose, "TOPIC_MODEL_TRAINING": "x", "CONSUMER_GROUP": "x"}
    assert any("local stack" in p for p in env_drift("eval", renamed, {**good_chart, **renamed}))


def test_settings_classes_are_all_deployed() -> None:
    """Each service's settings class is one the drift test maps (a new service needs a mapping here)."""
    classes = {
        name
        for name, value in vars(flts_settings).items()
        if name.endswith("Settings") and isinstance(value, type) and issubclass(value, flts_settings.CommonSettings)
    }
    assert classes - {"CommonSettings", "ConsumerSettings"} <= set(SERVICE_SETTINGS.values())


# ------------------------------------------------------------------------------------------- pipeline config


PIPELINE = (REPO / "config" / "pipeline.yaml").read_text()


def pipeline_configmap(objects: list[dict[str, Any]]) -> str:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-pipeline")]
    return cm["data"]["pipeline.yaml"]


@pytest.mark.parametrize("render_name", sorted(RENDERS))
def test_chart_pipeline_configmap_is_config_pipeline_yaml(
    render_name: str, render: Callable[..., list[dict[str, Any]]]
) -> None:
    assert pipeline_configmap(render(*RENDERS[render_name])) == PIPELINE, (
        "the chart's pipeline ConfigMap differs from config/pipeline.yaml: "
        "cp config/pipeline.yaml .helm/files/pipeline.yaml"
    )
    yaml.safe_load(PIPELINE)
    load_pipeline_config(REPO / "config" / "pipeline.yaml")


def test_pipeline_drift_is_caught(render: Callable[..., list[dict[str, Any]]], tmp_path: Path) -> None:
    changed = tmp_path / "pipeline.yaml"
    changed.write_text(PIPELINE.replace("input_seq_len: 10", "input_seq_len: 12"))
    assert pipeline_configmap(render("--set-file", f"pipeline={changed}")) != PIPELINE


def test_every_service_mounts_the_one_pipeline_config(
    compose_model: dict[str, Any], render: Callable[..., list[dict[str, Any]]]
) -> None:
    source = compose_model["configs"]["pipeline"]["file"]
    assert Path(source) == REPO / "config" / "pipeline.yaml"
    objects = render()
    for service in SERVICE_SETTINGS:
        path = compose_model["services"][service]["environment"]["PIPELINE_CONFIG"]
        mounts = compose_model["services"][service].get("configs", [])
        assert {"source": "pipeline", "target": path} in [
            {"source": m["source"], "target": m["target"]} for m in mounts
        ], f"compose {service} does not mount config/pipeline.yaml at {path}"
        chart_path = chart_env(objects, service)["PIPELINE_CONFIG"]
        (workload,) = [
            o
            for o in objects
            if o["kind"] in {"Deployment", "Job"} and o["metadata"]["labels"]["app.kubernetes.io/component"] == service
        ]
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounted = [
            m
            for m in spec["containers"][0]["volumeMounts"]
            if Path(chart_path).parent == Path(m["mountPath"])
            and volumes[m["name"]].get("configMap", {}).get("name", "").endswith("-pipeline")
        ]
        assert mounted and Path(chart_path).name == "pipeline.yaml", f"chart {service}: {chart_path} not mounted"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY config/pipeline.yaml /etc/flts/pipeline.yaml" in dockerfile
    assert "PIPELINE_CONFIG=/etc/flts/pipeline.yaml" in dockerfile


@pytest.mark.parametrize("copy", sorted(CHART_COPIES))
def test_chart_copies_are_identical(copy: str) -> None:
    source = CHART_COPIES[copy]
    assert (CHART / copy).read_bytes() == (REPO / source).read_bytes(), (
        f".helm/{copy} differs from {source}: make sync-chart-config"
    )


def test_secrets_never_reach_the_compared_values(render: Callable[..., list[dict[str, Any]]]) -> None:
    """The chart's S3 secrets are secretKeyRefs (a service user's access key id is its name, flts-<user>);
    their generated values are not in any ConfigMap."""
    objects = render()
    secrets = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] in {"flts-s3", "flts-s3-users"}]
    values = {base64.b64decode(v).decode() for secret in secrets for v in secret["data"].values()}
    assert len(values) == 2 + len(SERVICES)  # the root key and each service user's secret
    for service in SERVICE_SETTINGS:
        env = chart_env(objects, service)
        assert env["AWS_SECRET_ACCESS_KEY"] is SECRET
        assert not values & {v for v in env.values() if isinstance(v, str)}
