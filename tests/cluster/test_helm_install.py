"""`helm install` of the whole chart on a real single-node cluster (scripts/cluster.sh), as users install it.

Kafka runs with its SASL/SCRAM option on (every service its own user and ACLs); only image pull policy, replica
range and sizes differ from the defaults otherwise (values-cluster.yaml). The tests
run in file order against one release: install (init Job, every workload Ready), an upload through the
gateway Service ending with a champion served by every inference replica, `helm test`, Locust load making
the HPA scale inference out (the new replica serves the same champion), a trainer pod deleted mid-training,
`helm upgrade` keeping the generated Secrets and the data, and `helm uninstall` leaving only the PVCs.
The bridge CNI plugin the node runs does not enforce NetworkPolicies; they are rendered and applied only.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cluster_support import CHART, REGISTRY, ROOT, VALUES

from flts.client import FltsClient, window_request
from flts.data.generate import write_dataset

# The first run pushes ~15 GB of images to the node's registry; later runs push and pull only changed layers.
pytestmark = [pytest.mark.cluster_chart, pytest.mark.timeout(5400)]

NS = "flts-cluster-test"
RELEASE = "flts"
# Workloads that must become Ready without a model (inference waits for a champion).
DEPLOYMENTS = ["mlflow", "gateway", "preprocess", "train-gru", "train-lstm", "nonml", "eval"]
STATEFULSETS = ["kafka", "minio", "postgresql"]
HELM_ARGS = [str(CHART), "-n", NS, "-f", str(VALUES), "--set", f"image.registry={REGISTRY}", "--timeout", "15m"]
# Small datasets: the point is the cluster's behaviour, not the models' (2 cores serve every pod).
SMALL = {"train_rows": 2_000, "test_rows": 400}


def log(message: str) -> None:
    print(f"\ncluster: {message}", file=sys.stderr, flush=True)


def sh(env: dict[str, str], *cmd: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def kubectl_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(sh(env, "kubectl", "-n", NS, *args, "-o", "json").stdout)


def pods(env: dict[str, str], component: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
    items = kubectl_json(env, "get", "pods", "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def diagnose(env: dict[str, str]) -> str:
    """Pods, events and the last log lines of not-ready pods, for a failure message."""
    out = [sh(env, "kubectl", "-n", NS, "get", "pods,pvc,jobs,hpa", "-o", "wide", check=False).stdout]
    out.append(sh(env, "kubectl", "-n", NS, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-4000:])
    for pod in kubectl_json(env, "get", "pods")["items"]:
        if not is_ready(pod) and pod["status"].get("phase") != "Succeeded":
            name = pod["metadata"]["name"]
            logs = sh(env, "kubectl", "-n", NS, "logs", name, "--all-containers", "--tail=30", check=False)
            out.append(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-500:]}")
    return "\n".join(out)


def wait_ready(env: dict[str, str], timeout: float = 900) -> None:
    start = time.monotonic()
    for kind, names in (("statefulset", STATEFULSETS), ("deployment", DEPLOYMENTS)):
        for name in names:
            left = max(10, int(timeout - (time.monotonic() - start)))
            cmd = ["kubectl", "-n", NS, "rollout", "status", f"{kind}/{RELEASE}-{name}", f"--timeout={left}s"]
            if sh(env, *cmd, timeout=left + 30, check=False).returncode:
                pytest.fail(f"{kind} {name} not ready after {time.monotonic() - start:.0f} s\n{diagnose(env)}")


def wait_init_job(env: dict[str, str], revision: int, timeout: float = 900) -> None:
    job = f"job/{RELEASE}-init-{revision}"
    cmd = ["kubectl", "-n", NS, "wait", "--for=condition=complete", job, f"--timeout={int(timeout)}s"]
    if sh(env, *cmd, timeout=timeout + 30, check=False).returncode:
        pytest.fail(f"{job} did not complete\n{diagnose(env)}")


def secret_data(env: dict[str, str]) -> dict[str, dict[str, str]]:
    secrets = kubectl_json(env, "get", "secrets", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    return {s["metadata"]["name"]: s.get("data", {}) for s in secrets}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def port_forward(env: dict[str, str], target: str, remote_port: int) -> Iterator[str]:
    """`kubectl port-forward` as the README tells users to; yields the local base URL once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        ["kubectl", "-n", NS, "port-forward", target, f"{port}:{remote_port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, f"port-forward {target} failed"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def served_by_pod(env: dict[str, str], pod: str, identifier: str) -> dict[str, Any] | None:
    """/model-info asked inside one inference pod (the Service would pick any replica), with the admin key
    the pod itself holds (AUTH_ADMIN_KEY)."""
    script = (
        "import os, sys, urllib.request\n"
        f"url = 'http://127.0.0.1:8001/model-info?identifier={identifier}'\n"
        "request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + os.environ['AUTH_ADMIN_KEY']})\n"
        "try:\n"
        "    print(urllib.request.urlopen(request, timeout=5).read().decode())\n"
        "except Exception as exc:\n"
        "    print('null'); print(exc, file=sys.stderr)\n"
    )
    proc = sh(env, "kubectl", "-n", NS, "exec", pod, "--", "python", "-c", script, check=False, timeout=60)
    return json.loads(proc.stdout or "null") if proc.returncode == 0 else None


def wait_until(predicate, timeout: float, what: str, env: dict[str, str], interval: float = 3.0) -> float:
    """Seconds until ``predicate()`` held; fails with the cluster's state when it never did."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{diagnose(env)}")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def release(cluster: dict[str, str]) -> Iterator[dict[str, str]]:
    """A fresh install of the chart; uninstalled (namespace included) afterwards, whatever happened."""
    env = cluster
    sh(env, "helm", "uninstall", RELEASE, "-n", NS, "--wait", check=False)  # a killed earlier session
    sh(env, "kubectl", "delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=300)
    t0 = time.monotonic()
    sh(env, "helm", "install", RELEASE, *HELM_ARGS, "--create-namespace")
    try:
        wait_init_job(env, 1)
        log(f"init job (topics, buckets) complete {time.monotonic() - t0:.0f} s after `helm install`")
        wait_ready(env)
        log(f"every workload but inference ready {time.monotonic() - t0:.0f} s after `helm install`")
        yield env
    finally:
        sh(env, "helm", "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m", check=False)
        sh(env, "kubectl", "delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=300, check=False)


@pytest.fixture(scope="module")
def admin_key(release: dict[str, str]) -> str:
    """The admin's API key the chart generated (auth is on, as users install it)."""
    return base64.b64decode(secret_data(release)[f"{RELEASE}-auth"]["admin-api-key"]).decode()


@pytest.fixture(scope="module")
def client(release: dict[str, str], admin_key: str) -> Iterator[FltsClient]:
    with (
        port_forward(release, f"svc/{RELEASE}-gateway", 8000) as gateway,
        port_forward(release, f"svc/{RELEASE}-inference", 8001) as inference,
    ):
        yield FltsClient(gateway, inference, api_key=admin_key)


@pytest.fixture(scope="module")
def champion(release: dict[str, str], client: FltsClient, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The bundled dataset (small) uploaded through the gateway Service, until inference serves a champion."""
    train_csv, test_csv = write_dataset(tmp_path_factory.mktemp("cluster-data"), **SMALL)
    started = time.monotonic()
    upload = client.upload(train_csv, test_csv, identifier="cluster-station")
    status = client.wait_for_champion(upload["config_hash"], upload["identifier"], timeout=1200)
    log(f"upload -> champion served in {time.monotonic() - started:.0f} s")
    return {"status": status, "test_csv": test_csv, **upload}


def test_install_runs_the_init_job_and_every_workload_passes_its_probes(release: dict[str, str]) -> None:
    jobs = kubectl_json(release, "get", "jobs")["items"]
    assert any(j["metadata"]["name"] == f"{RELEASE}-init-1" and j["status"].get("succeeded") for j in jobs)
    for name in DEPLOYMENTS:
        assert all(is_ready(p) for p in pods(release, name)) and pods(release, name), name


def test_an_upload_through_the_gateway_service_is_served_by_every_inference_replica(
    release: dict[str, str], client: FltsClient, champion: dict
) -> None:
    version = champion["status"].champion.model_version
    replicas = [p["metadata"]["name"] for p in pods(release, "inference")]
    assert replicas
    for pod in replicas:
        wait_until(
            lambda pod=pod: (served_by_pod(release, pod, champion["identifier"]) or {}).get("model_version") == version,
            timeout=120,
            what=f"{pod} serves model version {version}",
            env=release,
        )
    forecast = client.predict(
        window_request(pd.read_csv(champion["test_csv"]), rows=10, identifier=champion["identifier"])
    )
    assert forecast["model_version"] == version and forecast["predictions"]


def test_helm_test_passes_once_a_champion_is_served(release: dict[str, str], champion: dict) -> None:
    result = sh(release, "helm", "test", RELEASE, "-n", NS, "--timeout", "5m", check=False, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr + diagnose(release)


def locust_job(duration_s: int, users: int, identifier: str) -> dict[str, Any]:
    """A bounded, headless Locust Job with the project's locustfile against the inference Service."""
    args = [
        *("-f", "/mnt/locust/locustfile.py", "--headless", "--only-summary"),
        *("--host", f"http://{RELEASE}-inference:8001", "--users", str(users), "--spawn-rate", str(users)),
        *("--run-time", f"{duration_s}s", "--stop-timeout", "5"),
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "locust-hpa", "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": duration_s + 120,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "locust",
                            "image": f"{REGISTRY}/locustio/locust:2.47.0",
                            "args": args,
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "FLTS_LOCUST_IDENTIFIER", "value": identifier},
                                {
                                    "name": "FLTS_API_KEY",
                                    "valueFrom": {"secretKeyRef": {"name": f"{RELEASE}-auth", "key": "admin-api-key"}},
                                },
                            ],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "volumeMounts": [{"name": "locustfile", "mountPath": "/mnt/locust"}],
                        }
                    ],
                    "volumes": [{"name": "locustfile", "configMap": {"name": "locustfile-hpa"}}],
                }
            },
        },
    }


def test_load_makes_the_hpa_scale_inference_out_and_the_new_replica_serves_the_champion(
    release: dict[str, str], champion: dict, tmp_path: Path
) -> None:
    hpa = kubectl_json(release, "get", "hpa", f"{RELEASE}-inference")
    before = hpa["status"].get("currentReplicas", 0)
    assert before < hpa["spec"]["maxReplicas"], "values-cluster.yaml must leave the HPA room to scale out"
    locustfile = ROOT / ".helm" / "files" / "locustfile.py"
    sh(release, "kubectl", "-n", NS, "create", "configmap", "locustfile-hpa", f"--from-file=locustfile.py={locustfile}")
    job = tmp_path / "locust-job.json"
    job.write_text(json.dumps(locust_job(duration_s=240, users=8, identifier=champion["identifier"])))
    sh(release, "kubectl", "apply", "-f", str(job))
    try:
        took = wait_until(
            lambda: (
                kubectl_json(release, "get", "hpa", f"{RELEASE}-inference")["status"].get("desiredReplicas", 0) > before
            ),
            timeout=240,
            what="the HPA scales inference out under Locust load",
            env=release,
        )
        log(f"HPA scaled inference out {took:.0f} s into the Locust run")
        version = champion["status"].champion.model_version

        def every_replica_serves_the_champion() -> bool:
            replicas = pods(release, "inference")
            return len(replicas) > before and all(
                is_ready(p)
                and (served_by_pod(release, p["metadata"]["name"], champion["identifier"]) or {}).get("model_version")
                == version
                for p in replicas
            )

        took = wait_until(
            every_replica_serves_the_champion, 300, "the new inference replica serves the champion", release
        )
        log(f"new inference replica ready with champion v{version} {took:.0f} s later")
    finally:
        sh(release, "kubectl", "-n", NS, "delete", "job", "locust-hpa", "--wait=true", check=False)
        sh(release, "kubectl", "-n", NS, "delete", "configmap", "locustfile-hpa", check=False)


def test_a_trainer_pod_deleted_mid_training_is_replaced_and_the_lineage_completes(
    release: dict[str, str], client: FltsClient, champion: dict, tmp_path: Path
) -> None:
    train_csv, test_csv = write_dataset(tmp_path, seed=31, **SMALL)
    upload = client.upload(train_csv, test_csv, identifier="cluster-deleted-trainer")
    config_hash, identifier = upload["config_hash"], upload["identifier"]

    def gru_running() -> bool:
        status = client.lineage(config_hash, identifier)
        return status is not None and any(r.model_type == "GRU" and r.status == "RUNNING" for r in status.training)

    wait_until(gru_running, 600, "GRU training starts", release, interval=1)
    (victim,) = pods(release, "train-gru")
    sh(release, "kubectl", "-n", NS, "delete", "pod", victim["metadata"]["name"], "--wait=false")
    deleted = time.monotonic()
    status = client.wait_for_champion(config_hash, identifier, timeout=1200)
    log(f"train-gru pod deleted mid-training -> champion served {time.monotonic() - deleted:.0f} s later")
    finished = {r.model_type for r in status.training if r.status == "FINISHED"}
    assert "GRU" in finished, status.training
    replacement = pods(release, "train-gru")
    assert replacement and replacement[0]["metadata"]["uid"] != victim["metadata"]["uid"]


def test_helm_upgrade_keeps_the_generated_secrets_and_the_data(
    release: dict[str, str], champion: dict, admin_key: str
) -> None:
    before = secret_data(release)
    assert before, "the chart generated no Secrets"
    started = time.monotonic()
    sh(release, "helm", "upgrade", RELEASE, *HELM_ARGS)
    wait_init_job(release, 2)
    wait_ready(release)
    log(f"`helm upgrade` ready after {time.monotonic() - started:.0f} s")
    after = secret_data(release)
    for name, data in before.items():
        changed = [k for k in data if after.get(name, {}).get(k) != data[k]]
        assert not changed, f"Secret {name} changed on upgrade: {changed}"
    assert all(base64.b64decode(v) for data in after.values() for v in data.values()), "an empty credential"
    # The data survived: the restarted gateway still knows the lineage and its champion.
    with port_forward(release, f"svc/{RELEASE}-gateway", 8000) as gateway:
        status = FltsClient(gateway, "", api_key=admin_key).lineage(champion["config_hash"], champion["identifier"])
    assert status and status.champion.model_version == champion["status"].champion.model_version


def test_helm_uninstall_leaves_only_the_persistent_volume_claims(release: dict[str, str]) -> None:
    sh(release, "helm", "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
    kinds = "all,configmaps,secrets,networkpolicies,pvc"
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def left() -> list[str]:
        items = kubectl_json(release, "get", kinds, "-l", selector)["items"]
        return sorted(f"{i['kind']}/{i['metadata']['name']}" for i in items if i["kind"] != "PersistentVolumeClaim")

    # Pods of deleted Jobs and Deployments go by garbage collection, after `helm uninstall` returns.
    deadline = time.monotonic() + 120
    while left() and time.monotonic() < deadline:
        time.sleep(3)
    assert not left(), f"left after uninstall: {left()}"
    claims = kubectl_json(release, "get", "pvc", "-l", selector)["items"]
    names = [c["metadata"]["name"] for c in claims]  # data-flts-kafka-0, ...: only the StatefulSets' volumes
    assert all(any(f"-{RELEASE}-{s}-" in n for s in ("kafka", "minio", "postgresql")) for n in names), names
