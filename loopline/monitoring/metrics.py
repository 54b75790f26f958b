"""Prometheus metrics of monitoring, read from the platform database at scrape time.

The monitor runs as one or more replicas, and any of them may have made the last check;
so nothing is kept in memory: each scrape reads the last check, the triggers and the
champion from the shared stores. ``loopline monitor --every 5m --metrics-port 9108``
serves them; the Grafana dashboard and the alert rules in ``infra/`` use these names.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from loopline.core.settings import Settings
from loopline.storage.checks import MonitorState
from loopline.storage.database import Database
from loopline.storage.registry import reader

log = logging.getLogger("loopline.monitoring")

LAST_CHECK = "loopline_monitor_last_check_timestamp_seconds"
DRIFTED_SHARE = "loopline_drift_share"
DRIFT_DETECTED = "loopline_drift_detected"
FEATURE_SCORE = "loopline_feature_drift_score"
PREDICTION_DRIFT = "loopline_prediction_drift_score"
WINDOW_ROWS = "loopline_monitor_window_rows"
TRIGGERS = "loopline_retraining_triggers"
HELD = "loopline_retraining_held"
CHAMPION = "loopline_champion_version"
SCRAPE_ERRORS = "loopline_monitor_scrape_errors"
# Evidently gives p-values (lower: more drift) for some methods and distances (higher:
# more drift) for others; the metrics always read one way.
DEGREE = "higher is more drift: 1 - p-value for a test, the distance for a distance (method)"
NAMES = (
    LAST_CHECK,
    DRIFTED_SHARE,
    DRIFT_DETECTED,
    FEATURE_SCORE,
    PREDICTION_DRIFT,
    WINDOW_ROWS,
    TRIGGERS,
    HELD,
    CHAMPION,
    SCRAPE_ERRORS,
)


class MonitorCollector(Collector):
    def __init__(self, settings: Settings, database: Database):
        self.settings = settings
        self.state = MonitorState(database)
        self.errors = 0

    def collect(self):
        model = self.settings.model_name
        try:
            yield from self._families(model)
        except Exception:  # a database hiccup must not turn the scrape into a stack trace
            self.errors += 1
            log.exception("metrics scrape failed")
        errors = GaugeMetricFamily(SCRAPE_ERRORS, "Scrapes that could not read the stores")
        errors.add_metric([], self.errors)
        yield errors

    def _families(self, model: str):
        champion = reader(self.settings).champion(model)
        family = GaugeMetricFamily(CHAMPION, "The registry's champion version", labels=["model"])
        if champion is not None and champion.version.isdigit():
            family.add_metric([model], float(champion.version))
        yield family
        triggers = GaugeMetricFamily(
            TRIGGERS, "Retraining triggers, by state", labels=["model", "state"]
        )
        for state, count in sorted(self.state.trigger_counts(model).items()):
            triggers.add_metric([model, state], count)
        yield triggers
        opened = self.state.open_trigger(model)
        held = GaugeMetricFamily(
            HELD, "1 while the open retraining is held by its labels' checks", labels=["model"]
        )
        held.add_metric([model], 1.0 if opened is not None and opened.held else 0.0)
        yield held
        check = self.state.last_check(model)
        if check is None:
            return
        summary = check["summary"]
        labels = ["model", "version"]
        values = [model, str(check["model_version"])]
        yield _gauge(LAST_CHECK, "When the last monitoring check ran", labels, values, check["ts"])
        yield _gauge(
            WINDOW_ROWS, "Predictions in the last check's window", labels, values, check["rows"]
        )
        yield _gauge(
            DRIFT_DETECTED,
            "1 when the last check found drift or a quality drop",
            labels,
            values,
            1.0 if check["verdict"] == "drift" else 0.0,
        )
        if summary.get("drifted_share") is not None:
            yield _gauge(
                DRIFTED_SHARE,
                "Share of features drifted in the last check",
                labels,
                values,
                summary["drifted_share"],
            )
        prediction = summary.get("prediction_drift")
        if prediction and "drift" in prediction:
            yield _gauge(
                PREDICTION_DRIFT,
                f"Drift of the predicted class in the last check; {DEGREE}",
                [*labels, "method"],
                [*values, prediction["method"]],
                prediction["drift"],
            )
        scores = GaugeMetricFamily(
            FEATURE_SCORE,
            f"Per-feature drift in the last check; {DEGREE}",
            labels=[*labels, "feature", "method"],
        )
        for feature, score in (summary.get("feature_scores") or {}).items():
            if isinstance(score, dict):  # checks before this release kept bare scores
                scores.add_metric([*values, feature, score["method"]], score["drift"])
        yield scores


def _gauge(name: str, text: str, labels: list[str], values: list[str], value: float):
    family = GaugeMetricFamily(name, text, labels=labels)
    family.add_metric(values, float(value))
    return family


def registry_for(settings: Settings, database: Database) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(MonitorCollector(settings, database))
    return registry


def serve(settings: Settings, database: Database, port: int, host: str = "127.0.0.1"):
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; return the server, whose
    ``shutdown()`` stops it."""
    server, _thread = start_http_server(port, addr=host, registry=registry_for(settings, database))
    log.info("monitoring metrics on http://%s:%d/metrics", host, port)
    return server
