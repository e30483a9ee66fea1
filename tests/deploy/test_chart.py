"""The Helm chart, offline: lint, render, schema-validate every object, and the properties FLTS relies on."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import CHART, EXTERNAL_VALUES, KUBE_VERSION, RENDERS, defined_metrics

from flts.kafka_users import ADMIN_USER, kafka_user
from flts.kafka_users import SERVICES as KAFKA_SERVICES
from flts.storage_users import SERVICES as STORAGE_SERVICES
from flts.storage_users import access_key

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
RUN_TO_COMPLETION = {"Job", "CronJob", "Pod"}  # the init Job and the `helm test` pod
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(obj)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


# ------------------------------------------------------------------------------------------- lint


@pytest.mark.parametrize("values", [None, EXTERNAL_VALUES], ids=["default", "external"])
def test_helm_lint_strict(helm: Callable[..., Any], values: Any) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values:
        args += ["-f", str(values)]
    helm(*args)


def test_chart_metadata() -> None:
    assert CHART_META["name"] == "flts"
    assert CHART_META["apiVersion"] == "v2"
    assert str(CHART_META["appVersion"]) == "0.1.0"


# ------------------------------------------------------------------------------------------- schemas


def test_every_object_validates_against_kubernetes(rendered: list[dict[str, Any]]) -> None:
    """Strict schema validation for Kubernetes 1.31; an unknown apiVersion is a failure, not a warning."""
    errors = []
    for obj in rendered:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for apiVersion {obj.get('apiVersion')} in Kubernetes {KUBE_VERSION}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.message} at {'/'.join(map(str, exc.path))}")
    assert not errors, "\n".join(errors)


def test_kubernetes_validate_cli_accepts_the_default_render(
    render: Callable[..., list[dict[str, Any]]], tmp_path: Any
) -> None:
    """The same check through the documented CLI, as CI would run it."""
    import subprocess
    import sys
    from pathlib import Path

    manifest = tmp_path / "flts.yaml"
    manifest.write_text(yaml.safe_dump_all(render()))
    cli = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(cli), "--strict", "--quiet", "-k", KUBE_VERSION, str(manifest)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_values_schema_rejects_wrong_types(helm: Callable[..., Any]) -> None:
    for bad in (
        "inference.autoscaling.minReplicas=abc",
        "gateway.port=eighty",
        "inference.autoscaling.targetCPUUtilizationPercentage=150",
        "kafka.enabled=maybe",
        "notAKey=1",
    ):
        result = helm("template", "flts", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, f"--set {bad} was accepted"
        assert "schema" in result.stderr, result.stderr


def test_eval_is_one_writer_never_two_pods(
    render: Callable[..., list[dict[str, Any]]], helm: Callable[..., Any]
) -> None:
    """Two eval pods could both move the champion alias: one replica, and upgrades that do not overlap."""
    (deployment,) = [o for o in render() if o["kind"] == "Deployment" and o["metadata"]["name"] == "flts-eval"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    for bad in ("eval.replicaCount=2", "eval.strategy.type=RollingUpdate"):
        result = helm("template", "flts", str(CHART), "--set", bad, check=False)
        assert result.returncode != 0 and "schema" in result.stderr, f"--set {bad} was accepted"


def test_values_schema_is_valid_json_schema() -> None:
    import jsonschema

    def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in override.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    jsonschema.Draft7Validator(schema).validate(merged(defaults, yaml.safe_load(EXTERNAL_VALUES.read_text())))


# Keys of the shapes every component shares, documented once at the top of values.yaml.
SHARED_SHAPES = {
    "image",
    "repository",
    "tag",
    "registry",
    "resources",
    "requests",
    "limits",
    "persistence",
    "size",
    "storageClass",
    "podSecurityContext",
    "containerSecurityContext",
    "nodeSelector",
    "tolerations",
    "affinity",
    "podAnnotations",
    "service",
    "type",
    "port",
    "replicaCount",
    "env",
    "enabled",
    "scaleUp",
    "scaleDown",
    "stabilizationWindowSeconds",
    "selectPolicy",
    "policies",
    "capabilities",
    "drop",
    "seccompProfile",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "fsGroupChangePolicy",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
}


def test_values_are_documented() -> None:
    """Every key of values.yaml has a comment above it (one comment may head a run of sibling keys),
    except the shared per-component shapes documented once at the top of the file."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not match or match.group(2) in SHARED_SHAPES or "#" in line.split(":", 1)[1]:
            continue
        indent = len(match.group(1))
        for above in reversed(lines[:number]):
            stripped = above.strip()
            depth = len(above) - len(above.lstrip())
            if not stripped or depth < indent:
                undocumented.append(f"{number + 1}: {match.group(2)}")
                break
            if stripped.startswith("#") and depth == indent:
                break
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


# ------------------------------------------------------------------------------------------- workloads


def test_standard_labels_on_every_object(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/part-of"] == "flts"
        assert obj["metadata"].get("namespace") == "flts", f"{obj['kind']}/{obj['metadata']['name']}"


def test_probes_and_resources_on_every_container(rendered: list[dict[str, Any]]) -> None:
    for obj in workloads(rendered):
        for container in containers(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind} incomplete"
            if obj["kind"] in RUN_TO_COMPLETION or container in pod_spec(obj).get("initContainers", []):
                continue  # runs to completion (a Job, the test pod, an init container): nothing to probe
            assert "livenessProbe" in container, f"{where}: no livenessProbe"
            assert "readinessProbe" in container, f"{where}: no readinessProbe"


def test_restricted_security_context_everywhere(rendered: list[dict[str, Any]]) -> None:
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        pod = spec.get("securityContext", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        writable = {m["mountPath"] for c in containers(obj) for m in c.get("volumeMounts", [])}
        for container in containers(obj):
            ctx = container.get("securityContext", {})
            cwhere = f"{where}/{container['name']}"
            assert ctx.get("runAsNonRoot") is True, cwhere
            assert ctx.get("allowPrivilegeEscalation") is False, cwhere
            assert ctx.get("readOnlyRootFilesystem") is True, cwhere
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], cwhere
            assert not ctx.get("capabilities", {}).get("add"), cwhere
            assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", cwhere
            assert not ctx.get("privileged"), cwhere
        # A read-only root needs somewhere to write: every pod has an emptyDir at /tmp.
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        tmp_mounts = [m for c in containers(obj) for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp_mounts, f"{where}: no /tmp mount"
        assert "emptyDir" in volumes[tmp_mounts[0]["name"]], f"{where}: /tmp is not an emptyDir"
        assert "/tmp" in writable


def test_flts_images_run_as_a_high_uid_and_are_tagged_with_the_app_version(rendered: list[dict[str, Any]]) -> None:
    for obj in workloads(rendered):
        for container in containers(obj):
            image = container["image"]
            assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1], image
            if image.split(":")[0].startswith("flts/"):
                assert image.endswith(f":{CHART_META['appVersion']}"), image
                assert pod_spec(obj)["securityContext"]["runAsUser"] >= 10000, obj["metadata"]["name"]


def test_one_deployment_per_service_and_trainer_type(render: Callable[..., list[dict[str, Any]]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind(render(), "Deployment")}
    expected = {
        "gateway": "gateway_container",
        "preprocess": "preprocess_container",
        "train-gru": "train_container",
        "train-lstm": "train_container",
        "nonml": "nonML_container",
        "eval": "eval_container",
        "inference": "inference_container",
    }
    for component, module in expected.items():
        deployment = deployments[f"flts-{component}"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"{module}.service"]
    env = {
        e["name"]: e.get("value")
        for e in deployments["flts-train-lstm"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODEL_TYPE"] == "LSTM"
    assert {"flts-kafka", "flts-minio", "flts-postgresql"} <= {
        s["metadata"]["name"] for s in by_kind(render(), "StatefulSet")
    }
    assert "flts-mlflow" in deployments


def test_the_tcn_transformer_and_seq2seq_trainers_are_off_until_enabled_and_then_train_their_type(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    families = {"tcn": "TCN", "transformer": "TRANSFORMER", "seq2seq": "SEQ2SEQ"}
    assert not {f"flts-train-{name}" for name in families} & {
        d["metadata"]["name"] for d in by_kind(render(), "Deployment")
    }
    objects = render(*(arg for name in families for arg in ("--set", f"trainers.{name}.enabled=true")))
    deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
    for name, model_type in families.items():
        container = deployments[f"flts-train-{name}"]["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["MODEL_TYPE"], env["CONSUMER_GROUP"]) == (model_type, f"flts-train-{name}")
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    assert "flts-train-tcn" in policies


# ------------------------------------------------------------------------------------------- inference


def test_inference_hpa_pdb_and_probes(render: Callable[..., list[dict[str, Any]]]) -> None:
    objects = render()
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert len(hpas) == 1
    hpa = hpas[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "flts-inference"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert {"scaleUp", "scaleDown"} <= set(hpa["spec"]["behavior"])

    deployment = one(objects, "Deployment", "flts-inference")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "startupProbe" in container

    pdb = one(objects, "PodDisruptionBudget", "flts-inference")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    service = one(objects, "Service", "flts-inference")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    test_pods = [p for p in by_kind(objects, "Pod") if p["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    assert len(test_pods) == 1 and "/readyz" in json.dumps(test_pods[0]["spec"])


def test_hpa_values_drive_the_hpa(render: Callable[..., list[dict[str, Any]]]) -> None:
    hpa = by_kind(
        render("--set", "inference.autoscaling.minReplicas=3", "--set", "inference.autoscaling.maxReplicas=7"),
        "HorizontalPodAutoscaler",
    )[0]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    fixed = render("--set", "inference.autoscaling.enabled=false", "--set", "inference.replicaCount=4")
    assert not by_kind(fixed, "HorizontalPodAutoscaler")
    assert one(fixed, "Deployment", "flts-inference")["spec"]["replicas"] == 4


# ------------------------------------------------------------------------------------------- config and secrets


S3_USER_NAMES = {access_key(service) for service in STORAGE_SERVICES}
SECRET_LIKE = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE)", re.IGNORECASE)


def test_no_plaintext_secrets_in_configmaps(rendered: list[dict[str, Any]]) -> None:
    secret_values = set()
    for secret in by_kind(rendered, "Secret"):
        for value in (secret.get("data") or {}).values():
            secret_values.add(base64.b64decode(value).decode())
        secret_values.update((secret.get("stringData") or {}).values())
    for cm in by_kind(rendered, "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            assert not SECRET_LIKE.search(key), f"ConfigMap {cm['metadata']['name']} holds {key}"
            for secret in secret_values:
                assert len(secret) < 8 or secret not in value, (
                    f"a Secret's value is in ConfigMap {cm['metadata']['name']}"
                )
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"credentials in a URL in {cm['metadata']['name']}"


def test_credentials_come_from_secrets(rendered: list[dict[str, Any]]) -> None:
    """Every credential-like env var is a secretKeyRef, never a literal."""
    for obj in workloads(rendered):
        for container in containers(obj):
            for env in container.get("env", []):
                if env["name"] == "AWS_ACCESS_KEY_ID" and env.get("value") in S3_USER_NAMES:
                    continue  # a service's own MinIO user name; its secret is a secretKeyRef
                if SECRET_LIKE.search(env["name"]) and not env["name"].endswith("_KEY"):
                    assert "valueFrom" in env, f"{obj['metadata']['name']}: {env['name']} is a literal"
                if env["name"] in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD", "PGPASSWORD"}:
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{obj['metadata']['name']}: {env['name']}"


def s3_env(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each workload's S3 key: {workload name: {AWS_ACCESS_KEY_ID: value or secretKeyRef, ...}}."""
    return {
        obj["metadata"]["name"]: {
            env["name"]: env.get("value") or env["valueFrom"]["secretKeyRef"]
            for env in obj["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if env["name"].startswith("AWS_") or env["name"].endswith("_S3_SECRET_KEY")
        }
        for obj in objects
        if obj["kind"] in {"Deployment", "Job"}
    }


def test_with_minio_each_service_has_its_own_s3_user_and_only_init_the_root_key(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    objects = render()
    users_secret = one(objects, "Secret", "flts-s3-users")
    assert set(users_secret["data"]) == {f"{service}-secret-key" for service in STORAGE_SERVICES}
    env = s3_env(objects)
    root = {"name": "flts-s3", "key": "access-key-id"}
    assert [name for name, e in env.items() if e.get("AWS_ACCESS_KEY_ID") == root] == ["flts-init-1"]
    for workload, user in [("flts-gateway", "gateway"), ("flts-train-gru", "train"), ("flts-mlflow", "mlflow")]:
        assert env[workload]["AWS_ACCESS_KEY_ID"] == access_key(user)
        assert env[workload]["AWS_SECRET_ACCESS_KEY"] == {"name": "flts-s3-users", "key": f"{user}-secret-key"}
    for service in STORAGE_SERVICES:  # init creates every user with the secret the service is given
        secret = {"name": "flts-s3-users", "key": f"{service}-secret-key"}
        assert env["flts-init-1"][f"{service.upper()}_S3_SECRET_KEY"] == secret


def test_with_kafka_sasl_each_service_logs_in_as_its_own_kafka_user_and_only_init_as_the_admin(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    objects = render("--set", "kafka.sasl.enabled=true")
    assert set(one(objects, "Secret", "flts-kafka-users")["data"]) == {
        f"{user}-password" for user in ("admin", *KAFKA_SERVICES)
    }
    logins = {
        obj["metadata"]["name"]: _env(obj["spec"]["template"]["spec"]["containers"][0])
        for obj in objects
        if obj["kind"] in {"Deployment", "Job"} and obj["metadata"]["name"] != "flts-mlflow"
    }
    for workload, user in [(f"flts-{s}", s) for s in KAFKA_SERVICES if s != "train"] + [
        ("flts-train-gru", "train"),
        ("flts-train-lstm", "train"),
        ("flts-init-1", "admin"),
    ]:
        env = logins[workload]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", workload
        assert env["KAFKA_SASL_USERNAME"] == (ADMIN_USER if user == "admin" else kafka_user(user)), workload
        password = {"secretKeyRef": {"name": "flts-kafka-users", "key": f"{user}-password"}}
        assert env["KAFKA_SASL_PASSWORD"] == password, workload
    for service in KAFKA_SERVICES:  # init creates every user with the password the service is given
        password = {"secretKeyRef": {"name": "flts-kafka-users", "key": f"{service}-password"}}
        assert logins["flts-init-1"][f"{service.upper()}_KAFKA_PASSWORD"] == password
    properties = one(objects, "ConfigMap", "flts-kafka")["data"]["server.properties"]
    assert "listeners=SASL_PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093" in properties
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in properties
    assert f"super.users=User:{ADMIN_USER};User:ANONYMOUS" in properties
    assert "password" not in properties, "the admin's password must not be in a ConfigMap"
    broker = one(objects, "StatefulSet", "flts-kafka")["spec"]["template"]["spec"]["containers"][0]
    assert _env(broker)["FLTS_KAFKA_ADMIN_PASSWORD"] == {
        "secretKeyRef": {"name": "flts-kafka-users", "key": "admin-password"}
    }
    assert "--add-scram" in broker["args"][0]


def test_kafka_sasl_is_on_by_default(render: Callable[..., list[dict[str, Any]]]) -> None:
    """The secure setup is the default: every service logs in as its own Kafka user unless told otherwise."""
    assert one(render(), "Secret", "flts-kafka-users")


def test_without_kafka_sasl_nothing_logs_in(render: Callable[..., list[dict[str, Any]]]) -> None:
    objects = render("--set", "kafka.sasl.enabled=false")
    assert not [o for o in objects if o["metadata"]["name"] == "flts-kafka-users"]
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job", "StatefulSet"}:
            assert not any(k.startswith("KAFKA_SASL") for k in _env(obj["spec"]["template"]["spec"]["containers"][0]))


def test_with_external_s3_every_process_uses_the_given_key(render: Callable[..., list[dict[str, Any]]]) -> None:
    objects = render("-f", str(EXTERNAL_VALUES))
    assert not [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("s3-users")]
    for name, env in s3_env(objects).items():
        if "AWS_ACCESS_KEY_ID" in env:
            assert env["AWS_ACCESS_KEY_ID"]["key"] == "access-key-id", name
            assert not any(key.endswith("_S3_SECRET_KEY") for key in env), name


def test_generated_secrets_have_no_default_and_are_kept_with_lookup(
    render: Callable[..., list[dict[str, Any]]],
) -> None:
    first = {s["metadata"]["name"]: s["data"] for s in by_kind(render(), "Secret")}
    second = {s["metadata"]["name"]: s["data"] for s in by_kind(render("--set", "commonLabels.x=y"), "Secret")}
    assert set(first) == {"flts-s3", "flts-s3-users", "flts-postgresql", "flts-auth", "flts-kafka-users"}
    assert first["flts-auth"]["admin-api-key"] != second["flts-auth"]["admin-api-key"]
    assert first != second, "generated credentials must be random, not a default"
    template = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "lookup" in template and "randAlphaNum" in template
    assert not re.search(r"(?i)password:\s*\S", (CHART / "values.yaml").read_text().replace('""', ""))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_both_apis_require_keys_from_the_auth_secret(render: Callable[..., list[dict[str, Any]]]) -> None:
    """Auth on by default: the admin key from the generated Secret, tenants' hashes mounted from it; the
    workers get no key material; Locust sends the admin key."""
    objects = render("--set", "locust.enabled=true")
    for name in ("flts-gateway", "flts-inference"):
        deployment = one(objects, "Deployment", name)
        (container,) = containers(deployment)
        env = _env(container)
        assert env["AUTH_ENABLED"] == "true"
        assert env["AUTH_ADMIN_KEY"] == {"secretKeyRef": {"name": "flts-auth", "key": "admin-api-key"}}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
        assert env["AUTH_KEYS_FILE"] == f"{mount['mountPath']}/api-keys.yaml"
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "api-keys")
        assert volume["secret"]["secretName"] == "flts-auth"
    for worker in ("flts-preprocess", "flts-eval", "flts-nonml"):
        (container,) = containers(one(objects, "Deployment", worker))
        assert not {k for k in _env(container) if k.startswith("AUTH_")}
    for role in ("master", "worker"):
        (container,) = containers(one(objects, "Deployment", f"flts-locust-{role}"))
        assert _env(container)["FLTS_API_KEY"] == {"secretKeyRef": {"name": "flts-auth", "key": "admin-api-key"}}


def test_principals_go_into_the_secret_as_hashes_and_the_switch_turns_auth_off(
    render: Callable[..., list[dict[str, Any]]], helm: Callable[..., Any]
) -> None:
    principal = {"name": "team-a", "sha256": "ab" * 32, "identifiers": ["cell-a*"]}
    objects = render("--set-json", f"auth.principals=[{json.dumps(principal)}]", "--set", "auth.enabled=false")
    keys = yaml.safe_load(base64.b64decode(one(objects, "Secret", "flts-auth")["data"]["api-keys.yaml"]))
    assert keys == {"principals": [principal]}
    (container,) = containers(one(objects, "Deployment", "flts-gateway"))
    assert _env(container)["AUTH_ENABLED"] == "false"
    raw_key = {"name": "team-a", "sha256": "flts_a-raw-key"}
    refused = helm(
        "template", "flts", str(CHART), "--set-json", f"auth.principals=[{json.dumps(raw_key)}]", check=False
    )
    assert refused.returncode != 0 and "sha256" in refused.stderr


def test_external_services_are_reached_by_values_alone(render: Callable[..., list[dict[str, Any]]]) -> None:
    objects = render(*RENDERS["external"])
    names = {o["metadata"]["name"] for o in workloads(objects)}
    assert not names & {"flts-kafka", "flts-minio", "flts-postgresql"}
    assert "flts-mlflow" in names
    env = one(objects, "ConfigMap", "flts-env")["data"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"].startswith("kafka-0.kafka.data.svc:9092")
    assert env["S3_ENDPOINT_URL"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["AWS_REGION"] == "eu-west-1"
    assert not by_kind(objects, "Secret"), "external credentials come from existing Secrets"
    mlflow_env = {
        e["name"]: e
        for e in one(objects, "Deployment", "flts-mlflow")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "postgres.data.svc:5432/mlflow" in mlflow_env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert mlflow_env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "flts-mlflow-db"

    no_mlflow = render(*RENDERS["external-mlflow"])
    assert "flts-mlflow" not in {o["metadata"]["name"] for o in workloads(no_mlflow)}
    assert one(no_mlflow, "ConfigMap", "flts-env")["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow.data.svc:5000"


def test_external_service_without_endpoint_fails_clearly(helm: Callable[..., Any]) -> None:
    result = helm("template", "flts", str(CHART), "--set", "kafka.enabled=false", check=False)
    assert result.returncode != 0 and "externalKafka.bootstrapServers" in result.stderr
    result = helm(
        "template",
        "flts",
        str(CHART),
        "--set",
        "minio.enabled=false",
        "--set",
        "externalS3.endpoint=https://s3.example.com",
        check=False,
    )
    assert result.returncode != 0 and "existingSecret" in result.stderr


# ------------------------------------------------------------------------------------------- capabilities


def test_servicemonitor_and_keda_only_with_their_apis(render: Callable[..., list[dict[str, Any]]]) -> None:
    plain = render("--set", "keda.enabled=true")
    assert not by_kind(plain, "ServiceMonitor") and not by_kind(plain, "ScaledObject")
    with_apis = render(
        "--set",
        "keda.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--api-versions",
        "keda.sh/v1alpha1",
    )
    (monitor,) = by_kind(with_apis, "ServiceMonitor")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind(with_apis, "ScaledObject")}
    assert {"flts-train-gru", "flts-train-lstm", "flts-nonml"} == set(scaled)
    trigger = scaled["flts-train-gru"]["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "flts-train-gru"
    for name in scaled:  # KEDA owns the trainers' replica counts
        assert "replicas" not in one(with_apis, "Deployment", name)["spec"]
    # Every metrics Service is selected by the ServiceMonitor.
    selector = monitor["spec"]["selector"]["matchLabels"]
    metric_services = [s for s in by_kind(with_apis, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert len(metric_services) == 7
    for service in metric_services:
        assert selector.items() <= service["metadata"]["labels"].items()


def test_every_flts_pod_is_scraped_by_the_bundled_prometheus(render: Callable[..., list[dict[str, Any]]]) -> None:
    objects = render(*RENDERS["everything"])
    config = yaml.safe_load(one(objects, "ConfigMap", "flts-prometheus")["data"]["prometheus.yml"])
    names = {n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
    services = {
        f"{s['metadata']['name']}.flts.svc"
        for s in by_kind(objects, "Service")
        if s["metadata"]["name"].endswith("-metrics")
    }
    assert names == services
    dashboards = one(objects, "ConfigMap", "flts-grafana-dashboards")["data"]["flts.json"]
    assert json.loads(dashboards)["uid"] == "flts-overview"


def test_every_dashboard_query_reads_a_metric_the_code_defines() -> None:
    dashboard = json.loads((CHART / "files" / "grafana" / "flts.json").read_text())
    queried = {
        (panel["title"], name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bflts_\w+", target["expr"])
    }
    defined = defined_metrics()
    assert {"flts_predictions_total", "flts_predict_seconds_bucket", "flts_predict_queue_depth"} <= defined
    assert [(title, name) for title, name in sorted(queried) if name not in defined] == []


def test_the_dashboard_shows_predict_refusals_for_a_full_queue_and_a_timeout() -> None:
    dashboard = json.loads((CHART / "files" / "grafana" / "flts.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for outcome in ("overloaded", "timed_out"):  # the 429 and 504 of inference_container/deps.py
        assert any(f'flts_predictions_total{{outcome="{outcome}"}}' in expr for expr in exprs), outcome


def test_network_policies_cover_every_pod(rendered: list[dict[str, Any]]) -> None:
    policies = [p["spec"]["podSelector"]["matchLabels"] for p in by_kind(rendered, "NetworkPolicy")]
    for obj in workloads(rendered):
        labels = obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]
        assert any(sel.items() <= labels.items() for sel in policies), f"{obj['metadata']['name']} has no NetworkPolicy"


def test_each_backbone_part_admits_only_the_components_that_use_it(render: Callable[..., list[dict[str, Any]]]) -> None:
    """Grafana, Locust and the test pod reach no backbone part; only MLflow reaches PostgreSQL; only the
    services that log or load models reach MLflow."""
    objects = render(
        "--set", "prometheus.enabled=true", "--set", "grafana.enabled=true", "--set", "locust.enabled=true"
    )

    def admitted(part: str) -> set[str]:
        (rule,) = one(objects, "NetworkPolicy", f"flts-{part}")["spec"]["ingress"]
        return {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]}

    services = {"gateway", "preprocess", "nonml", "eval", "inference", "train-gru", "train-lstm"}
    assert admitted("kafka") == services | {"init"}
    assert admitted("minio") == services | {"init", "mlflow"}
    assert admitted("mlflow") == services - {"preprocess"}
    assert admitted("postgresql") == {"mlflow"}
    assert admitted("prometheus") == {"grafana"}
    extra = {"namespaceSelector": {"matchLabels": {"name": "tools"}}}
    with_extra = render("--set-json", f"networkPolicy.extraBackboneIngress=[{json.dumps(extra)}]")
    (rule,) = one(with_extra, "NetworkPolicy", "flts-kafka")["spec"]["ingress"]
    assert extra in rule["from"]
