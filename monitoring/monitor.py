"""One monitoring pass: judge the newest window of the prediction log, then start any
retraining that is due.

The window runs from the end of the last judged window (or the champion's first
prediction) to now, for the serving champion version only. A window smaller than
``min_rows`` is left to grow. A judged window leaves an Evidently HTML report, a JSON
summary and a snapshot in the Evidently workspace (``evidently ui --workspace
LOOPLINE_HOME/monitoring/workspace``). When the policy fires, a trigger is recorded; it
starts the retraining pipeline once ``min_labels`` labelled predictions exist.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from components.dataset import LABEL, DatasetSchema
from components.layout import INPUT_SCHEMA, REFERENCE
from components.registry import Registry, VersionInfo
from components.settings import Settings
from monitoring.alerts import send_alert
from monitoring.drift import PREDICTION, DriftResult, detect_drift
from monitoring.policy import Policy
from monitoring.retrain import start_retraining
from monitoring.state import MonitorState, Trigger
from serving.feedback import FeedbackStore
from serving.prediction_log import PredictionLog

log = logging.getLogger("loopline.monitoring")


@dataclass
class MonitorResult:
    model: str
    status: str  # no_champion, waiting, ok, drift
    champion_version: str | None = None
    window: dict = field(default_factory=dict)
    drift: dict | None = None
    quality: dict | None = None
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    trigger: str | None = None  # new, duplicate, cooldown
    retraining: list[dict] = field(default_factory=list)


def monitor_folder(settings: Settings) -> Path:
    return settings.home / "monitoring"


def run_monitor(
    settings: Settings,
    policy: Policy,
    *,
    start: float | None = None,
    end: float | None = None,
    retrain: bool = True,
) -> MonitorResult:
    """Judge one window (``start``/``end`` in Unix seconds override the automatic one)."""
    name = settings.model_name
    registry = Registry(settings)
    champion = registry.champion(name)
    state = MonitorState(monitor_folder(settings))
    if champion is None:
        return MonitorResult(name, "no_champion")
    result = _judge(settings, policy, state, registry, champion, start, end)
    if retrain:
        result.retraining = start_due_retraining(settings, policy, state)
    return result


def _judge(settings, policy, state, registry, champion: VersionInfo, start, end) -> MonitorResult:
    name, version = settings.model_name, champion.version
    last = state.last_check(name)
    if start is None:
        start = last["window_end"] if last and last["model_version"] == version else 0.0
    end = time.time() if end is None else end
    window = PredictionLog(settings.prediction_log).read_window(
        _moment(start), _moment(end), model_version=version
    )
    result = MonitorResult(
        name, "waiting", version, {"start": start, "end": end, "rows": len(window)}
    )
    if len(window) < policy.min_rows:
        return result
    folder = registry.download(champion)
    schema = DatasetSchema.from_json((folder / INPUT_SCHEMA).read_text())
    drift = detect_drift(
        _reference(folder, schema), _current(window, schema), schema.features,
        drift_share=policy.drift_share, max_rows=policy.max_rows,
    )  # fmt: skip
    result.drift = drift.to_dict()
    result.quality = _quality(settings, version, start, end)
    result.reasons = _reasons(policy, drift, result.quality)
    result.status = "drift" if result.reasons else "ok"
    _write_reports(settings, result, drift)
    state.record_check(name, version, start, end, len(window), result.status, _brief(result))
    if result.reasons:
        result.trigger = _add_trigger(settings, policy, state, result)
    return result


def _reference(folder: Path, schema: DatasetSchema) -> pd.DataFrame:
    reference = pd.read_parquet(folder / REFERENCE)
    reference[PREDICTION] = reference[LABEL].map(lambda i: schema.classes[int(i)])
    return reference


def _current(window: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    current = pd.DataFrame(np.stack(window["inputs"].to_numpy()), columns=schema.features)
    current[PREDICTION] = window["label"].to_numpy()
    return current


def _quality(settings: Settings, version: str, start: float, end: float) -> dict | None:
    labelled = FeedbackStore(settings.prediction_log).labelled(start)
    labelled = labelled[(labelled.model_version == version) & (labelled.ts < end)]
    if labelled.empty:
        return None
    return {
        "rows": len(labelled),
        "accuracy": float((labelled.prediction == labelled.label).mean()),
    }


def _reasons(policy: Policy, drift: DriftResult, quality: dict | None) -> list[str]:
    reasons = []
    if "data_drift" in policy.triggers and drift.data_drift:
        reasons.append(
            f"data drift: {drift.drifted_share:.0%} of features drifted "
            f"(threshold {policy.drift_share:.0%})"
        )
    if "prediction_drift" in policy.triggers and drift.prediction and drift.prediction["drifted"]:
        p = drift.prediction
        reasons.append(
            f"prediction drift: {p['method']} {p['score']:.3g} (threshold {p['threshold']})"
        )
    if "quality" in policy.triggers and quality and quality["accuracy"] < policy.min_accuracy:
        reasons.append(
            f"quality: accuracy {quality['accuracy']:.3f} on {quality['rows']} labelled rows "
            f"(minimum {policy.min_accuracy})"
        )
    return reasons


def _write_reports(settings: Settings, result: MonitorResult, drift: DriftResult) -> None:
    stamp = datetime.fromtimestamp(result.window["end"], UTC).strftime("%Y%m%dT%H%M%S")
    folder = (
        monitor_folder(settings) / "reports" / f"{result.model}-v{result.champion_version}-{stamp}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    html, summary = folder / "drift.html", folder / "summary.json"
    drift.snapshot.save_html(str(html))
    result.reports = {"html": str(html), "json": str(summary)}  # the summary names them too
    summary.write_text(json.dumps(_brief(result) | {"drift": result.drift}, indent=2))
    _add_to_workspace(settings, result.model, drift)


def _add_to_workspace(settings: Settings, model: str, drift: DriftResult) -> None:
    """Add the snapshot to the Evidently workspace that `evidently ui` shows.

    Evidently's file workspace reads every snapshot when it opens, so a monitor opening it
    while another writes one reads half a file: writers take turns under a file lock.
    """
    from evidently.ui.workspace import Workspace

    folder = monitor_folder(settings) / "workspace"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / "workspace.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        workspace = Workspace.create(str(folder))
        title = f"loopline {model}"
        found = workspace.search_project(title)
        project = found[0] if found else workspace.create_project(title, description="drift")
        workspace.add_run(project.id, drift.snapshot)


def _brief(result: MonitorResult) -> dict:
    drift = result.drift or {}
    return {
        "model": result.model,
        "champion_version": result.champion_version,
        "status": result.status,
        "window": result.window,
        "drifted_share": drift.get("drifted_share"),
        "prediction_drift": drift.get("prediction"),
        "quality": result.quality,
        "reasons": result.reasons,
        "reports": result.reports,
    }


def _add_trigger(
    settings: Settings, policy: Policy, state: MonitorState, result: MonitorResult
) -> str:
    last = state.last_started(result.model)
    if last is not None and time.time() - last < policy.cooldown_s:
        return "cooldown"
    trigger = state.add_trigger(
        result.model, result.champion_version, result.window["start"], result.reasons,
        result.reports.get("html", ""),
    )  # fmt: skip
    if trigger is None:
        return "duplicate"
    send_alert(
        policy.alert_url, "drift",
        f"{result.model} v{result.champion_version}: " + "; ".join(result.reasons),
        {"report": result.reports.get("html"), "trigger_id": trigger.id},
    )  # fmt: skip
    return "new"


def start_due_retraining(settings: Settings, policy: Policy, state: MonitorState) -> list[dict]:
    """Start each pending trigger that has its labels; one claim wins per trigger."""
    started = []
    for trigger in state.triggers(settings.model_name, "pending"):
        labelled = len(FeedbackStore(settings.prediction_log).labelled(trigger.window_start))
        if labelled < policy.min_labels:
            started.append({"trigger_id": trigger.id, "state": "pending",
                            "waiting_for": f"{labelled}/{policy.min_labels} labelled predictions"})  # fmt: skip
            continue
        if not state.claim(trigger.id):
            continue  # another monitor took it
        started.append(_retrain(settings, policy, state, trigger))
    return started


def _retrain(settings: Settings, policy: Policy, state: MonitorState, trigger: Trigger) -> dict:
    try:
        outcome = start_retraining(
            settings, trigger, engine=policy.retrain_engine, epochs=policy.retrain_epochs
        )
    except Exception as exc:  # recorded and alerted; the champion is untouched
        outcome = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
    state.finish(trigger.id, outcome["state"], outcome)
    event = {"promoted": "promotion", "failed": "failure"}.get(outcome["state"])
    if event:
        send_alert(
            policy.alert_url, event,
            f"retraining for {trigger.model_name} (trigger {trigger.id}): {outcome['state']}"
            + (f" v{outcome.get('version')}" if outcome["state"] == "promoted" else ""),
            outcome,
        )  # fmt: skip
    return {"trigger_id": trigger.id, **outcome}


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
