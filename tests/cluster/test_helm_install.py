"""`helm install` of the chart on a real single-node cluster (scripts/cluster.sh), as users install it.

Only image pull policy and sizes differ from the defaults (values-cluster.yaml). Checked here: every
workload starts and passes its probes (inference excepted: it is Ready only once a champion exists),
the init Job creates topics and buckets, the generated Secrets survive `helm upgrade`, and
`helm uninstall` leaves only the PersistentVolumeClaims the README says it leaves.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from cluster_support import CHART, VALUES

pytestmark = pytest.mark.cluster_chart

NS = "flts-cluster-test"
RELEASE = "flts"
# Workloads that must become Ready without a model (inference waits for a champion).
DEPLOYMENTS = ["mlflow", "gateway", "preprocess", "train-gru", "train-lstm", "nonml", "eval"]
STATEFULSETS = ["kafka", "minio", "postgresql"]


def sh(env: dict[str, str], *cmd: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def kubectl_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(sh(env, "kubectl", "-n", NS, *args, "-o", "json").stdout)


def diagnose(env: dict[str, str]) -> str:
    """Pods, events and the last log lines of not-ready pods, for a failure message."""
    out = [sh(env, "kubectl", "-n", NS, "get", "pods,pvc,jobs", "-o", "wide", check=False).stdout]
    out.append(sh(env, "kubectl", "-n", NS, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-4000:])
    for pod in kubectl_json(env, "get", "pods")["items"]:
        ready = all(c.get("ready") for c in pod["status"].get("containerStatuses", []))
        if not ready:
            name = pod["metadata"]["name"]
            logs = sh(env, "kubectl", "-n", NS, "logs", name, "--all-containers", "--tail=30", check=False)
            out.append(f"--- {name}\n{logs.stdout[-3000:]}{logs.stderr[-500:]}")
    return "\n".join(out)


def wait_ready(env: dict[str, str], timeout: float = 900) -> None:
    start = time.monotonic()
    for kind, names in (("statefulset", STATEFULSETS), ("deployment", DEPLOYMENTS)):
        for name in names:
            left = max(10, int(timeout - (time.monotonic() - start)))
            proc = sh(
                env,
                "kubectl",
                "-n",
                NS,
                "rollout",
                "status",
                f"{kind}/{RELEASE}-{name}",
                f"--timeout={left}s",
                timeout=left + 30,
                check=False,
            )
            if proc.returncode:
                pytest.fail(f"{kind} {name} not ready after {time.monotonic() - start:.0f} s\n{diagnose(env)}")
            print(f"  {kind} {name} ready after {time.monotonic() - start:.0f} s", flush=True)


def wait_init_job(env: dict[str, str], revision: int, timeout: float = 900) -> None:
    job = f"job/{RELEASE}-init-{revision}"
    proc = sh(
        env,
        "kubectl",
        "-n",
        NS,
        "wait",
        "--for=condition=complete",
        job,
        f"--timeout={int(timeout)}s",
        timeout=timeout + 30,
        check=False,
    )
    if proc.returncode:
        pytest.fail(f"{job} did not complete\n{diagnose(env)}")


def secret_data(env: dict[str, str]) -> dict[str, dict[str, str]]:
    secrets = kubectl_json(env, "get", "secrets", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    return {s["metadata"]["name"]: s.get("data", {}) for s in secrets}


def gateway_get(env: dict[str, str], path: str) -> tuple[int, bytes]:
    """GET through `kubectl port-forward` to the gateway Service, as the README tells users to."""
    port = 18700
    pf = subprocess.Popen(
        ["kubectl", "-n", NS, "port-forward", f"svc/{RELEASE}-gateway", f"{port}:8000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                    return answer.status, answer.read()
            except OSError:
                if time.monotonic() > deadline or pf.poll() is not None:
                    raise
                time.sleep(1)
    finally:
        pf.terminate()
        pf.wait(10)


def test_helm_install_upgrade_uninstall(cluster: dict[str, str]) -> None:
    env = cluster
    helm_args = [str(CHART), "-n", NS, "-f", str(VALUES), "--timeout", "15m"]
    sh(env, "helm", "uninstall", RELEASE, "-n", NS, "--wait", check=False)  # a killed earlier session
    sh(env, "kubectl", "delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=300)

    t0 = time.monotonic()
    sh(env, "helm", "install", RELEASE, *helm_args, "--create-namespace")
    wait_init_job(env, 1)
    print(f"init job (topics, buckets) complete after {time.monotonic() - t0:.0f} s", flush=True)
    wait_ready(env)
    print(f"release ready (all but inference) {time.monotonic() - t0:.0f} s after `helm install`", flush=True)

    status, body = gateway_get(env, "/healthz")
    assert status == 200, body
    status, body = gateway_get(env, "/datasets")
    assert status == 200, body

    before = secret_data(env)
    assert before, "the chart generated no Secrets"
    t1 = time.monotonic()
    sh(env, "helm", "upgrade", RELEASE, *helm_args)
    wait_init_job(env, 2)
    wait_ready(env)
    print(f"`helm upgrade` ready after {time.monotonic() - t1:.0f} s", flush=True)
    after = secret_data(env)
    for name, data in before.items():
        assert after.get(name) == data, f"Secret {name} changed on upgrade: " + ", ".join(
            k for k in data if after.get(name, {}).get(k) != data[k]
        )
    decoded = {k: base64.b64decode(v) for data in after.values() for k, v in data.items()}
    assert all(decoded.values()), "an empty generated credential"

    sh(env, "helm", "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "5m")
    left = kubectl_json(
        env, "get", "all,configmaps,secrets,networkpolicies,pvc", "-l", f"app.kubernetes.io/instance={RELEASE}"
    )["items"]
    kinds = sorted({item["kind"] for item in left})
    assert kinds in ([], ["PersistentVolumeClaim"]), f"left after uninstall: {kinds}"
    sh(env, "kubectl", "delete", "namespace", NS, "--wait=true", timeout=300)
