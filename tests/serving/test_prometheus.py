"""The alerts and the dashboard in a real Prometheus, scraping a real `bentoml serve` and a
real `loopline monitor --every --metrics-port`, all on loopback. Shifted traffic must make
the drift alert fire in Prometheus' own /api/v1/alerts; a replica left on an old version
must fire the served-not-champion alert; every dashboard panel must return series. A real
Alertmanager, on infra/k8s/base/alertmanager.yaml's routes, must deliver each alert to the
webhook its severity names, and hold the model's warnings back while its critical fires.

The rules are the PrometheusRule's, with every `for:` cut to 0 s, and Alertmanager waits
1 s before a group's first notice (30 s in the manifest), so the test is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from loopline.core import processes
from loopline.core.settings import load_settings
from loopline.monitoring.monitor import monitor_folder
from loopline.serving.server import start_server
from loopline.storage.registry import Registry
from tests.conftest import daemon, free_port
from tests.infra import alertmanager
from tests.infra.test_alert_rules import RULES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "k8s" / "base" / "dashboards" / "loopline.json"
PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.xdist_group("served"),  # shares the session's registry, and promotes in it
    pytest.mark.skipif(PROMETHEUS is None, reason="apt-get install prometheus (make test does)"),
    pytest.mark.skipif(
        alertmanager.ALERTMANAGER is None,
        reason="apt-get install prometheus-alertmanager (make test does)",
    ),
]
DIGITS = load_digits().data / 16.0


def _rules(folder: Path) -> Path:
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule["for"] = "0s"
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def _prometheus(
    folder: Path, targets: dict[str, list[str]], alertmanager_at: str
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {
        # Scrapes time out at the interval: 2 s leaves room on a loaded machine.
        "global": {"scrape_interval": "2s", "evaluation_interval": "1s"},
        "rule_files": [str(_rules(folder))],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_at]}]}]},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = daemon(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        folder / "prometheus.log",
    )
    return process, f"http://127.0.0.1:{port}"


class _Webhooks:
    """The receivers' webhooks on loopback: every notice Alertmanager posts, by receiver."""

    def __init__(self):
        self.notices: list[tuple[str, dict]] = []
        notices = self.notices

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                notices.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{self.server.server_port}"
        self.urls = {"team": f"{url}/team", "oncall": f"{url}/oncall"}

    def got(self, alert: str) -> set[str]:
        """The receivers a firing notice of ``alert`` reached."""
        return {
            receiver
            for receiver, notice in self.notices
            for a in notice["alerts"]
            if a["labels"]["alertname"] == alert and a["status"] == "firing"
        }


def _suppressed(alertmanager_at: str, name: str) -> list[dict]:
    """Alertmanager's own view: ``name``'s alerts held back by an inhibition."""
    alerts = httpx.get(
        f"http://{alertmanager_at}/api/v2/alerts",
        params={"filter": f'alertname="{name}"', "inhibited": "true"},
        timeout=10,
    ).json()
    return [a for a in alerts if a["status"]["inhibitedBy"]]


def _query(prometheus: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def _firing(prometheus: str, name: str) -> list[dict]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def _until(what, timeout: float, why: str):
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, why
        time.sleep(0.5)
    return found


def _send(url: str, rows: np.ndarray, per_request: int = 10) -> None:
    with httpx.Client(timeout=30) as http:
        for start in range(0, len(rows), per_request):
            part = rows[start : start + per_request].tolist()
            assert http.post(f"{url}/predict", json={"instances": part}).status_code == 200


def test_drift_fires_in_prometheus_and_every_dashboard_panel_shows_series(
    served, champion_v1, tmp_path
):
    env = {"LOOPLINE_HOME": str(tmp_path / "home"), "LOOPLINE_TRACKING_URI": served.settings.tracking_uri}  # fmt: skip
    settings = load_settings(env)
    settings.home.mkdir(parents=True)
    (settings.home / "monitoring.yaml").write_text("min_rows: 200\ncooldown: 0s\n")
    server = start_server(settings, port=free_port(), log_path=tmp_path / "serve.log", poll_s="0.5")
    # A replica left on v1 whatever the champion: a pod of its own, so a home of its own
    # (two servers on one home share BentoML's metric files).
    replica = load_settings({**env, "LOOPLINE_HOME": str(tmp_path / "replica")})
    stale = start_server(replica, port=free_port(), log_path=tmp_path / "stale.log", version="1")
    monitor_port = free_port()
    monitor = subprocess.Popen(
        [str(Path(sys.executable).with_name("loopline")), "monitor", "--every", "1s",
         "--no-retrain", "--metrics-port", str(monitor_port)],
        env={**os.environ, **env},
        stdout=open(tmp_path / "monitor.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=processes.die_with_parent,
    )  # fmt: skip
    hosts = {
        "loopline-serving": [server.url.removeprefix("http://"), stale.url.removeprefix("http://")],
        "loopline-monitor": [f"127.0.0.1:{monitor_port}"],
    }
    hooks = _Webhooks()
    timing = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
    routes = alertmanager.write_config(tmp_path, hooks.urls, timing)
    manager, manager_at = alertmanager.start(tmp_path, routes)
    prometheus, prom = _prometheus(tmp_path, hosts, manager_at)
    try:
        server.wait_ready()
        stale.wait_ready()
        _until(
            lambda: len([r for r in _query(prom, "up == 1")]) == 3,
            90,
            "Prometheus never scraped the two servers and the monitor",
        )
        assert not _firing(prom, "LooplineDrift")  # no check yet: silent
        # Shifted traffic: the left five columns of every digit inverted.
        shifted = DIGITS[:220].copy().reshape(-1, 8, 8)
        shifted[:, :, :5] = 1.0 - shifted[:, :, :5]
        sent = time.monotonic()
        _send(server.url, shifted.reshape(-1, 64))
        [alert] = _until(lambda: _firing(prom, "LooplineDrift"), 120, "no drift alert")
        took = time.monotonic() - sent
        (tmp_path / "drift-alert-seconds.txt").write_text(f"{took:.1f}\n")
        print(f"shifted traffic to a firing drift alert: {took:.1f} s")
        assert alert["labels"]["model"] == settings.model_name
        # Delivered by Alertmanager to the team's webhook, and not to on-call: a warning.
        _until(
            lambda: hooks.got("LooplineDrift"), 60, "Alertmanager never delivered the drift alert"
        )
        delivered = time.monotonic() - sent
        print(f"shifted traffic to the team's webhook: {delivered:.1f} s")
        assert hooks.got("LooplineDrift") == {"team"}
        # The dashboard's ranking is the check's: its top features are the drifted ones.
        [summary] = sorted((monitor_folder(settings) / "reports").glob("*/summary.json"))[-1:]
        drifted = set(json.loads(summary.read_text())["drift"]["drifted_columns"])
        assert 0 < len(drifted) < 64
        panel = "topk(10, max by (feature, method) (loopline_feature_drift_score))"
        top = {s["metric"]["feature"] for s in _query(prom, panel)}
        assert len(top) == 10 and top <= drifted, (top, drifted)
        assert all(int(f.split("_")[1]) % 8 < 5 for f in top), top  # the inverted columns
        # An error gives the error-rate panel its series.
        httpx.post(f"{server.url}/predict", json={"instances": [[2.0] * 64]})
        # A promotion: the following server moves, the stale replica alerts, alone.
        Registry(settings).promote(settings.model_name, "2")
        _until(lambda: _version(server.url) == "2", 60, "the server never followed")
        stuck = {hosts["loopline-serving"][1]}

        def not_champion() -> set[str]:
            firing = _firing(prom, "LooplineServingNotChampion")
            return {a["labels"]["instance"] for a in firing}

        _until(lambda: not_champion() == stuck, 60, "the stale replica never alerted alone")
        for _ in range(6):  # and the server that follows never joins it
            assert not_champion() <= stuck
            time.sleep(0.5)
        # A critical alert pages on-call, and holds the same model's warnings back.
        paged = _until(lambda: hooks.got("LooplineServingNotChampion"), 60, "on-call never paged")
        assert paged == {"oncall"}
        [held] = _until(lambda: _suppressed(manager_at, "LooplineDrift"), 60, "drift not held")
        assert held["labels"]["model"] == settings.model_name
        for expr in _panel_queries():
            if "[" in expr:  # a rate over 5 minutes: a few seconds of samples are enough
                expr = re.sub(r"\[\d+m\]", "[1m]", expr)
            assert _query(prom, expr), f"the panel query {expr!r} returns no series"
    finally:
        processes.stop_tree(prometheus.pid, grace=10)
        processes.stop_tree(manager.pid, grace=10)
        hooks.server.shutdown()
        processes.stop_tree(monitor.pid, grace=20)
        server.stop()
        stale.stop()


def _version(url: str) -> str:
    probe = {"instances": [[0.0] * 64]}
    return httpx.post(f"{url}/predict", json=probe, timeout=30).json()["model_version"]


def _panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    return [e.replace("$model", ".*").replace("${model}", ".*") for e in exprs]
