"""The single-node cluster itself (scripts/cluster.sh): what the chart tests stand on, checked for real."""

from __future__ import annotations

import subprocess

import pytest
from cluster_support import CLUSTER_SH

pytestmark = pytest.mark.cluster


def test_a_real_node_runs_pods_resolves_services_and_scales_out_on_cpu(node: dict[str, str]) -> None:
    """`cluster.sh smoke`: a Deployment behind a Service answers a pod through cluster DNS, the HPA reads
    CPU from metrics-server and scales it out under load, and the new replicas answer too."""
    result = subprocess.run([str(CLUSTER_SH), "smoke"], env=node, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "smoke passed" in result.stdout + result.stderr
