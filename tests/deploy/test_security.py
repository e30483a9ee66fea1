"""Security scan with checkov: the rendered chart, the Dockerfiles, and a secrets scan of the sources.

checkov runs from its own venv (~/.cache/flts/checkov, installed on first use: it pins boto3, which
must not enter the project's venv); when it cannot be installed, the scan fails with the installer's
message (never skipped). Its helm framework needs a helm on PATH and silently checks nothing without
one, so the chart is rendered here and scanned as plain Kubernetes YAML. Every check left failing
must be skipped with a written reason: in .checkov.yaml (a whole check) or in a
`checkov.io/skipN: CHECK=reason` annotation (one resource).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import deploy_support
import pytest
import yaml
from deploy_support import RENDERS, REPO, CheckovUnavailable, checkov_binary

CONFIG = REPO / ".checkov.yaml"


@pytest.fixture(scope="module")
def checkov() -> Callable[..., dict[str, Any]]:
    binary = checkov_binary()  # raises when checkov cannot be installed: the scan fails, it is never skipped

    def _checkov(*args: str) -> dict[str, Any]:
        # Its own venv, not the project's (pytest may run with VIRTUAL_ENV set).
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        result = subprocess.run(
            [str(binary), "--config-file", str(CONFIG), "-o", "json", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=900,
        )
        assert result.returncode in (0, 1), result.stderr[-3000:]
        report = json.loads(result.stdout)
        reports = report if isinstance(report, list) else [report]
        failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
        passed = sum(r.get("summary", {}).get("passed", r.get("passed", 0)) for r in reports)
        return {"failed": failed, "passed": passed, "returncode": result.returncode}

    return _checkov


def describe(failed: list[dict[str, Any]]) -> str:
    return "\n".join(f"{c['check_id']} {c['check_name']}: {c.get('resource')} ({c.get('file_path')})" for c in failed)


def test_rendered_chart_passes(
    checkov: Callable[..., dict[str, Any]], render: Callable[..., list[dict[str, Any]]], tmp_path: Path
) -> None:
    for name, args in RENDERS.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(render(*args)))
    report = checkov("--framework", "kubernetes", "-d", str(tmp_path))
    assert report["passed"] > 100, "checkov checked (almost) nothing"
    assert not report["failed"], describe(report["failed"])


def test_dockerfiles_pass(checkov: Callable[..., dict[str, Any]]) -> None:
    files = ["Dockerfile", "deploy/mlflow/Dockerfile"]
    args = [a for f in files for a in ("-f", f)]
    report = checkov("--framework", "dockerfile", *args)
    assert report["passed"] >= 10 * len(files)
    assert not report["failed"], describe(report["failed"])


def test_no_secrets_in_the_sources(checkov: Callable[..., dict[str, Any]]) -> None:
    files = [
        "docker-compose.yaml",
        ".env.example",
        ".helm/values.yaml",
        ".helm/ci/external-values.yaml",
        "deploy/prometheus/prometheus.yml",
        ".helm/files/grafana/datasource.yaml",
        ".helm/files/locustfile.py",
        *[str(p.relative_to(REPO)) for p in (REPO / ".helm" / "templates").rglob("*.yaml")],
    ]
    args = [a for f in files for a in ("-f", f)]
    report = checkov("--framework", "secrets", *args)
    assert not report["failed"], describe(report["failed"])


def test_every_skip_has_a_written_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    config = yaml.safe_load(CONFIG.read_text())
    for check in config["skip-check"]:
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        reason = []
        for line in reversed(lines[:index]):
            if not line.strip().startswith("#"):
                break
            reason.append(line)
        assert len(" ".join(reason)) > 40, f"{check} is skipped without a reason in .checkov.yaml"
    for template in (REPO / ".helm" / "templates").rglob("*.yaml"):
        for match in re.finditer(r"checkov\.io/skip\d+:\s*(\S+)", template.read_text()):
            check, _, reason = match.group(1).partition("=")
            line = template.read_text()[match.start() : template.read_text().find("\n", match.start())]
            assert reason and len(line.split("=", 1)[1]) > 20, f"{template.name}: {check} skipped without reason"


def test_a_checkov_that_cannot_be_installed_fails_the_scan_with_the_installers_message(tmp_path, monkeypatch):
    """No package index, a withdrawn version: the scan must not pass (or skip) having checked nothing."""
    monkeypatch.setattr(deploy_support, "CACHE", tmp_path)
    monkeypatch.setattr(deploy_support.shutil, "which", lambda name: None)
    calls: list[list[str]] = []

    def install(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        if "install" in command:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for checkov")
        (tmp_path / "checkov" / "bin").mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(deploy_support.subprocess, "run", install)
    with pytest.raises(CheckovUnavailable, match=r"could not be installed.*No matching distribution found for checkov"):
        checkov_binary()
    assert len(calls) == 2 and not (tmp_path / "checkov").exists(), "a half-made venv is removed"
