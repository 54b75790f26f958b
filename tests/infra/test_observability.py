"""The Grafana dashboard and the alert rules query only metrics that loopline exports:
each PromQL expression is parsed down to its metric names, which must be among the
series that loopline/serving/metrics.py and loopline/monitoring/metrics.py produce."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from loopline.monitoring import metrics as monitoring_metrics
from loopline.serving.metrics import ServingMetrics

BASE = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "base"
# PromQL words that are not metric names.
PROMQL = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "bottomk",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "time",
    "absent",
    "clamp_min",
    "clamp_max",
    "by",
    "on",
    "without",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    registry = CollectorRegistry()
    ServingMetrics("m", registry=registry)
    names = {
        family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]
    }
    return names | set(monitoring_metrics.NAMES)


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', "", expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", "", text)  # numbers, 1e-9 too
    text = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return words - PROMQL


def dashboard_queries() -> list[str]:
    dashboard = json.loads((BASE / "dashboards" / "loopline.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_queries() -> list[str]:
    rules = yaml.safe_load((BASE / "alerts.yaml").read_text())
    return [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_name_only_exported_metrics(source):
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    assert queries
    known = exported()
    for expr in queries:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"{expr!r} names {sorted(names - known)}, which nothing exports"


def test_the_parser_finds_a_metric_that_does_not_exist():
    assert metric_names('sum by (le) (rate(bentoml_request_total{x="a"}[5m])) > 1') == {
        "bentoml_request_total"
    }
    assert metric_names("time() - max(up) > 1e-9") == {"up"}


def test_the_alerts_cover_what_operations_asked_for():
    names = {
        r["alert"]
        for g in yaml.safe_load((BASE / "alerts.yaml").read_text())["spec"]["groups"]
        for r in g["rules"]
    }
    assert {
        "LooplineMonitoringStalled",
        "LooplineDrift",
        "LooplineServingErrors",
        "LooplineServingLatencyP99",
        "LooplineServingNotChampion",
    } <= names
