"""FLTS's Prometheus alerting rules, offline: Debian's promtool checks them and runs their unit tests
(alerts_test.yaml), and compose's and the chart's Prometheus load that one file."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from deploy_support import REPO, defined_metrics
from prometheus_support import ALERT_RULES, alert_rules, prometheus_binaries

RULES_TEST = Path(__file__).with_name("alerts_test.yaml")
RULES_PATH = "/etc/prometheus/alerts.yaml"  # where compose and the chart put the file
EVERYTHING = ("--set", "prometheus.enabled=true")
WITH_OPERATOR = ("--api-versions", "monitoring.coreos.com/v1")
# The scrape jobs of compose's and the chart's Prometheus (and the Operator's, by flts.io/job): FltsTargetDown's.
JOBS = {"gateway", "inference", "workers"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    _, binary = prometheus_binaries()
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_checks_the_rules_and_every_metric_they_read_is_one_the_code_defines() -> None:
    result = promtool("check", "rules", str(ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = alert_rules()
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
    read = {name for rule in rules.values() for name in re.findall(r"\bflts_\w+", rule["expr"])}
    assert read and read <= defined_metrics(), read - defined_metrics()
    (jobs,) = re.findall(r'job=~"([^"]+)"', rules["FltsTargetDown"]["expr"])
    assert set(jobs.split("|")) == JOBS


def test_promtool_unit_tests_pass_and_every_alert_is_shown_firing() -> None:
    result = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert fired == set(alert_rules()), f"alerts no unit test shows firing: {set(alert_rules()) - fired}"


def _rule_files(config: dict[str, Any]) -> list[str]:
    return config.get("rule_files", [])


def test_composes_prometheus_loads_the_rules_from_the_charts_file(compose_model: dict[str, Any], tmp_path) -> None:
    volumes = compose_model["services"]["prometheus"]["volumes"]
    binds = {v["target"]: v["source"] for v in volumes if v["type"] == "bind"}
    assert binds[RULES_PATH] == str(ALERT_RULES)
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert _rule_files(config) == [RULES_PATH]
    assert scrape_jobs(config) - {"prometheus"} == JOBS
    _check_config(config, tmp_path)


def test_the_charts_prometheus_loads_the_same_rules_and_the_operator_gets_them_too(
    render: Callable[..., list[dict[str, Any]]], tmp_path
) -> None:
    objects = render(*EVERYTHING)
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "flts-prometheus"]
    assert config_map["data"]["alerts.yaml"] == ALERT_RULES.read_text()
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    assert _rule_files(config) == [RULES_PATH]
    _check_config(config, tmp_path)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "flts-prometheus"]
    assert "checksum/alerts" in deployment["spec"]["template"]["metadata"]["annotations"]

    plain = render()
    assert not [o for o in plain if o["kind"] == "PrometheusRule"]
    with_operator = render(*WITH_OPERATOR)
    (rule,) = [o for o in with_operator if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(ALERT_RULES.read_text())
    # The Operator names each job by the Service's flts.io/job: the names the rules and the dashboard read.
    (monitor,) = [o for o in with_operator if o["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["jobLabel"] == "flts.io/job"
    jobs = {
        o["metadata"]["name"]: o["metadata"]["labels"]["flts.io/job"]
        for o in with_operator
        if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")
    }
    assert jobs["flts-gateway-metrics"] == "gateway" and jobs["flts-inference-metrics"] == "inference"
    assert {job for name, job in jobs.items() if "gateway" not in name and "inference" not in name} == {"workers"}
    assert scrape_jobs(config) == set(jobs.values()) == JOBS


def scrape_jobs(config: dict[str, Any]) -> set[str]:
    return {job["job_name"] for job in config["scrape_configs"]}


def _check_config(config: dict[str, Any], directory: Path) -> None:
    """`promtool check config` of a Prometheus config, its rule file read from the repository."""
    local = {**config, "rule_files": [str(ALERT_RULES) for _ in _rule_files(config)]}
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(local))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout
