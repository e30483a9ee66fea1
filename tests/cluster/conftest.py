"""A real single-node Kubernetes cluster for tests marked `cluster` (scripts/cluster.sh).

The session fixture brings the cluster up (building or reusing the cached binaries), imports the images
the compose harness builds into the node's containerd, and always tears the cluster down afterwards, then
checks that nothing is left (processes, mounts, the cni0 bridge, KUBE-/CNI- iptables chains). Set
FLTS_TEST_KEEP_CLUSTER=1 to reuse a running cluster and leave it up (fast edit-test loops).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cluster_support import CLUSTER_SH, IMAGES
from harness import PROJECT, Compose, DockerEngine, build_images


@contextmanager
def live_output(config: pytest.Config) -> Iterator[None]:
    """Let the harness's progress lines reach the terminal (bring-up and imports take minutes)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        yield
        return
    with capture.global_and_fixture_disabled():
        yield


def cluster_sh(*args: str) -> None:
    """Run a harness command with its output on the terminal; a failure names the command, not a traceback."""
    code = subprocess.run([str(CLUSTER_SH), *args]).returncode
    if code:
        pytest.fail(f"scripts/cluster.sh {args[0]} exited {code} (its output is above)", pytrace=False)


@pytest.fixture(scope="session")
def node(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment (KUBECONFIG, PATH with kubectl and helm) of a running single-node cluster."""
    if os.geteuid() != 0:
        pytest.fail("the cluster harness needs root (containerd, iptables, mounts)")
    keep = os.environ.get("FLTS_TEST_KEEP_CLUSTER") == "1"
    env_lines = subprocess.run([str(CLUSTER_SH), "env"], check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in env_lines.splitlines():
        for assignment in line.removeprefix("export ").split():
            key, _, value = assignment.partition("=")
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    helm_home = tmp_path_factory.mktemp("helm")  # never the user's own helm config, cache or plugins
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(helm_home / var.lower())
    try:
        with live_output(pytestconfig):
            cluster_sh("up")
        yield env
    finally:
        if not keep:
            with live_output(pytestconfig):
                # `down` exits non-zero when anything is left (processes, mounts, cni0, iptables chains).
                cluster_sh("down")


@pytest.fixture(scope="session")
def cluster(node: dict[str, str], pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory):
    """The node with FLTS's images in its registry: built by the compose harness exactly as `docker compose
    build` builds them (seconds when cached), on a Docker engine started if none runs, then pushed."""
    engine = DockerEngine().start()
    try:
        with live_output(pytestconfig):
            build_images(Compose.with_env(PROJECT, tmp_path_factory.mktemp("build"), {"TORCH_INDEX_URL": ""}))
            cluster_sh("push", *IMAGES)
    finally:
        engine.stop()  # only if this fixture started it; the images stay in Docker's data root
    return node
