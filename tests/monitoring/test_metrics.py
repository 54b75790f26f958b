"""Monitoring's Prometheus metrics: read from the stores at scrape time, so any replica's
last check shows, and a broken store gives an error count rather than a failed scrape."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loopline.core.settings import load_settings
from loopline.monitoring import metrics
from loopline.serving.server import free_port
from loopline.storage.checks import MonitorState


def samples(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_last_check_and_triggers_by_state_are_exported(database, tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    state = MonitorState(database)
    summary = {
        "drifted_share": 0.75,
        "feature_scores": {
            "pixel_3": {"drift": 0.9, "method": "K-S p_value"},
            "pixel_4": {"drift": 0.01, "method": "Wasserstein distance (normed)"},
            "pixel_5": 0.3,  # a check from before methods were kept: not exported
        },
        "prediction_drift": {"score": 0.6, "drift": 0.4, "method": "chi-square p_value"},
    }
    state.record_check("other-model", "7", 1, 10, 10, "ok", {"drifted_share": 0.0})
    state.record_check(settings.model_name, "3", 1, 500, 500, "drift", summary)
    state.raise_trigger(settings.model_name, "3", 1, ["data drift"], "report")
    registry = metrics.registry_for(settings, database)

    got = samples(generate_latest(registry).decode())
    mine = (("model", settings.model_name), ("version", "3"))
    assert got[(metrics.DRIFTED_SHARE, mine)] == 0.75
    assert got[(metrics.DRIFT_DETECTED, mine)] == 1.0
    assert got[(metrics.WINDOW_ROWS, mine)] == 500
    assert got[(metrics.PREDICTION_DRIFT, (("method", "chi-square p_value"), *mine))] == 0.4
    ks = (("feature", "pixel_3"), ("method", "K-S p_value"), *mine)
    assert got[(metrics.FEATURE_SCORE, ks)] == 0.9
    assert not [labels for name, labels in got if ("feature", "pixel_5") in labels]
    assert abs(got[(metrics.LAST_CHECK, mine)] - time.time()) < 60
    trigger = (metrics.TRIGGERS, (("model", settings.model_name), ("state", "pending")))
    assert got[trigger] == 1
    assert got[(metrics.SCRAPE_ERRORS, ())] == 0
    assert not any(dict(labels).get("model") == "other-model" for _, labels in got)


def test_a_broken_database_counts_an_error_instead_of_failing_the_scrape(database, tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    registry = metrics.registry_for(settings, database)
    from sqlalchemy import text

    with database.write() as connection:  # a damaged schema: every read of checks fails
        connection.execute(text("DROP TABLE checks"))
    got = samples(generate_latest(registry).decode())
    assert got[(metrics.SCRAPE_ERRORS, ())] == 1


def test_loopline_monitor_serves_metrics_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path), "LOOPLINE_PREFECT_IDLE": "1d"}
    monitor = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("loopline")),
            "monitor",
            "--every",
            "1s",
            "--no-retrain",
            "--metrics-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                break
            except httpx.TransportError:
                assert monitor.poll() is None, monitor.stdout.read()
                assert time.monotonic() < deadline, "no metrics within 60 s"
                time.sleep(0.3)
        assert samples(text)[(metrics.SCRAPE_ERRORS, ())] == 0
        monitor.send_signal(signal.SIGTERM)  # between passes: 0; mid-pass: 130, as Ctrl-C
        assert monitor.wait(timeout=30) in (0, 130)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        monitor.kill()
        monitor.wait()


@pytest.mark.parametrize("flags", [["--metrics-port", "9"]])
def test_metrics_without_every_are_refused(flags, tmp_path):
    from typer.testing import CliRunner

    from loopline.cli import app

    result = CliRunner().invoke(app, ["monitor", *flags], env={"LOOPLINE_HOME": str(tmp_path)})
    assert result.exit_code == 2 and "--every" in result.output


@pytest.mark.parametrize(
    ("score", "threshold", "drifted", "degree"),
    [
        (0.001, 0.05, True, 0.999),  # a test's p-value: drift below the threshold
        (0.6, 0.05, False, 0.4),
        (0.3, 0.1, True, 0.3),  # a distance: drift at or above it
        (0.02, 0.1, False, 0.02),
    ],
)
def test_drift_degree_is_higher_for_more_drift_whatever_the_method(
    score, threshold, drifted, degree
):
    from loopline.monitoring.drift import drift_degree

    assert drift_degree(score, threshold, drifted) == pytest.approx(degree)


def test_the_most_drifted_features_come_first_across_methods():
    """The issue's defect: ranked by raw score, the K-S features with p = 0 (the most
    drifted) came last, and the dashboard's top 10 showed the least drifted."""
    from loopline.monitoring.monitor import _top_scores

    columns = {
        "calm": {"score": 0.9, "threshold": 0.05, "drifted": False, "method": "ks", "drift": 0.1},
        "moved": {"score": 0.0, "threshold": 0.05, "drifted": True, "method": "ks", "drift": 1.0},
        "far": {"score": 0.5, "threshold": 0.1, "drifted": True, "method": "wd", "drift": 0.5},
    }
    assert list(_top_scores(columns)) == ["moved", "far", "calm"]
