"""Where each alert goes, judged by Alertmanager's own amtool: the route loads, every alert
of the PrometheusRule reaches a receiver by its severity (critical pages on-call, warnings
go to the team), and nothing falls through to a receiver by accident. A real Alertmanager
delivering a real alert is tests/serving/test_prometheus.py."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.infra.alertmanager import AMTOOL, write_config
from tests.infra.test_alert_rules import RULES

pytestmark = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool is not installed (apt-get install prometheus-alertmanager; make test does)",
)
RECEIVERS = {"critical": "oncall", "warning": "team"}
URLS = {"team": "http://127.0.0.1:9/team", "oncall": "http://127.0.0.1:9/oncall"}


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


def routed(config, **labels: str) -> str:
    tested = amtool(
        "config", "routes", "test", f"--config.file={config}", *(f"{k}={v}" for k, v in labels.items())
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    return tested.stdout.strip()


def test_the_routes_load_in_alertmanager(tmp_path):
    checked = amtool("check-config", str(write_config(tmp_path, URLS)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "2 receivers" in checked.stdout, checked.stdout


def test_every_alert_reaches_the_receiver_its_severity_names(tmp_path):
    config = write_config(tmp_path, URLS)
    rules = [r for g in yaml.safe_load(RULES.read_text())["spec"]["groups"] for r in g["rules"]]
    assert len(rules) == 7
    for rule in rules:
        severity = rule["labels"]["severity"]
        assert severity in RECEIVERS, f"{rule['alert']} has severity {severity!r}: route it"
        got = routed(config, alertname=rule["alert"], severity=severity, model="digits")
        assert got == RECEIVERS[severity], (rule["alert"], got)


def test_a_route_that_pages_for_everything_is_caught(tmp_path):
    """The check can fail: a config whose on-call route matches warnings too is told apart."""
    config = write_config(tmp_path, URLS)
    wrong = yaml.safe_load(config.read_text())
    wrong["route"]["routes"][0]["matchers"] = ['severity=~"critical|warning"']
    config.write_text(yaml.safe_dump(wrong))
    assert routed(config, alertname="LooplineDrift", severity="warning") == "oncall"
