"""Paths and image names shared by the cluster tests and their fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "compose"))  # harness: the Docker engine and the image builds
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
CHART = ROOT / ".helm"
VALUES = Path(__file__).with_name("values-cluster.yaml")
VERSION = "0.1.0"
# The node's image registry (scripts/cluster.sh starts it): the test pushes IMAGES there and installs from it.
REGISTRY = f"localhost:{os.environ.get('FLTS_REGISTRY_PORT', '5000')}"
# The images the compose harness (tests/compose) builds into the local Docker engine.
IMAGES = [
    *(f"flts/{name}:{VERSION}" for name in ("gateway", "train", "nonml", "eval", "inference", "preprocess", "mlflow")),
    "apache/kafka:4.1.1",
    "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
    "postgres:17.6-bookworm",
    "locustio/locust:2.47.0",
]
