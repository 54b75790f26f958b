"""The alert rules, judged by Prometheus' own promtool: they load, and each alert fires
on its input series and stays silent on a healthy one (tests/infra/alert_cases.yaml).
`make test` installs Debian's prometheus package, which brings promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "k8s" / "base" / "alerts.yaml"
CASES = Path(__file__).with_name("alert_cases.yaml")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)


def rule_file(folder: Path, rules: Path = RULES) -> Path:
    """The PrometheusRule's groups as a plain rule file, as the operator loads them."""
    path = folder / "rules.yaml"
    groups = yaml.safe_load(rules.read_text())["spec"]["groups"]
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def unit_tests(folder: Path, rules: Path) -> subprocess.CompletedProcess:
    cases = yaml.safe_load(CASES.read_text())
    cases["rule_files"] = [str(rules)]
    path = folder / "cases.yaml"
    path.write_text(yaml.safe_dump(cases, sort_keys=False))
    return promtool("test", "rules", str(path))


def test_the_rules_load_in_prometheus(tmp_path):
    checked = promtool("check", "rules", str(rule_file(tmp_path)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout, checked.stdout


def test_every_alert_fires_on_its_series_and_stays_silent_when_healthy(tmp_path):
    tested = unit_tests(tmp_path, rule_file(tmp_path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["spec"]["groups"]
        for rule in group["rules"]
    }
    cases = yaml.safe_load(CASES.read_text())["tests"]
    covered = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    assert covered == alerts  # no alert without its test


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("loopline_drift_detected) == 1", "loopline_drift_detect) == 1"),  # a wrong name
        ("(loopline_served_model_version)", "(loopline_served_version)"),
        ('kind="server"', 'kind="client"'),
    ],
)
def test_a_rule_with_a_wrong_metric_name_fails_its_test(tmp_path, wrong, right):
    broken = tmp_path / "broken.yaml"
    text = RULES.read_text()
    assert wrong in text
    broken.write_text(text.replace(wrong, right))
    tested = unit_tests(tmp_path, rule_file(tmp_path, broken))
    assert tested.returncode != 0, tested.stdout
