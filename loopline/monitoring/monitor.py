"""One monitoring pass: judge the newest window of the prediction log, then start (or
follow) the retraining that is due.

A window is a range of prediction numbers for the serving champion: from the end of the
last judged window to the newest committed prediction, so nothing is skipped or judged
twice whatever the replicas' clocks say. The last judged window is the last of the model,
whichever version it judged: after a rollback (or any move of the champion) the window
starts where judging stopped, so the restored version's rows judged before it was
replaced are not judged again. A window smaller than ``min_rows`` is left to
grow; of a larger one, ``max_rows`` rows drawn by number are read. A judged window leaves an
Evidently HTML report, a JSON summary and a snapshot in the Evidently workspace
(``evidently ui --workspace LOOPLINE_HOME/monitoring/workspace``).

When the policy fires, the model's open trigger takes the reasons (one drift episode, one
retraining). It starts the retraining pipeline once ``min_labels`` labelled predictions
exist, under a lease; a trigger recorded against a version that is no longer the
champion is dropped (superseded) rather than run blindly.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from evidently.legacy.utils import NumpyEncoder
from evidently.ui.storage.local.base import SNAPSHOTS_DIR_NAME, LocalState
from evidently.ui.workspace import Workspace

from loopline.core.layout import DIGEST_TAG, FORMAT_TAG, INPUT_SCHEMA, REFERENCE
from loopline.core.settings import Settings
from loopline.ml.dataset import LABEL, DatasetSchema
from loopline.ml.mlflow_model import ModelCard, registered_card, typed
from loopline.ml.model_contract import verify_digest
from loopline.monitoring.alerts import send_alert
from loopline.monitoring.drift import PREDICTION, DriftResult, detect_drift
from loopline.monitoring.label_checks import LabelVerdict, check_labels
from loopline.monitoring.policy import Policy
from loopline.storage.checks import MonitorState, Trigger
from loopline.storage.database import Database, open_database
from loopline.storage.feedback import FeedbackStore
from loopline.storage.predictions import PredictionLog, decode_records
from loopline.storage.registry import VersionInfo, model_folder, reader

log = logging.getLogger("loopline.monitoring")


@dataclass
class MonitorResult:
    model: str
    status: str  # no_champion, waiting, ok, drift
    champion_version: str | None = None
    window: dict = field(default_factory=dict)  # first_seq, last_seq, rows (, sampled)
    drift: dict | None = None
    quality: dict | None = None
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    trigger: str | None = None  # new, joined, cooldown
    retraining: list[dict] = field(default_factory=list)
    seconds: float | None = None  # the judging part of the pass, imports not included


def monitor_folder(settings: Settings) -> Path:
    return settings.home / "monitoring"


class Monitor:
    """Monitoring for the settings' model, over one open database (reused pass to pass)."""

    def __init__(self, settings: Settings, policy: Policy, database: Database | None = None):
        self.settings = settings
        self.policy = policy
        self.database = database or open_database(settings, migrate=True)
        self.log = PredictionLog(self.database)
        self.feedback = FeedbackStore(self.database, settings.labels.conflicts)
        self.state = MonitorState(self.database)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        pipeline = policy.pipelines.get(settings.model_name)
        if pipeline is not None:  # a pipeline that cannot take the data is refused now
            from loopline.monitoring.retrain import check_pipeline

            check_pipeline(settings.model_name, pipeline)

    def run(self, *, retrain: bool = True, window: tuple[int, int] | None = None) -> MonitorResult:
        """One pass; ``window`` = (after, upto) prediction numbers overrides the automatic one."""
        started = time.perf_counter()
        name = self.settings.model_name
        champion = reader(self.settings).champion(name)
        if champion is None:
            return MonitorResult(name, "no_champion")
        result = self._judge(champion, window)
        result.seconds = round(time.perf_counter() - started, 2)
        if retrain:
            result.retraining = self.start_due_retraining()
        return result

    def close(self) -> None:
        self.log.close()
        self.database.close()

    def _judge(self, champion: VersionInfo, window) -> MonitorResult:
        name, version, policy = self.settings.model_name, champion.version, self.policy
        if window is None:
            last = self.state.last_check(name)  # of any version: see the module's docstring
            window = (last["last_seq"] if last else 0, self.log.last_seq())
        after, upto = window
        rows = self.log.count_window(after, upto, model_version=version)
        window_info = {"first_seq": after + 1, "last_seq": upto, "rows": rows}
        result = MonitorResult(name, "waiting", version, window_info)
        if rows < policy.min_rows:
            return result
        # Drawn by number, enough that about max_rows of them are the champion's.
        drawn = min(upto - after, math.ceil(policy.max_rows * (upto - after) / rows))
        records = champion.tags.get(FORMAT_TAG) == "mlflow"  # inputs logged as sent
        current = self.log.sample_window(
            after, upto, drawn, model_version=version, seed=upto, records=records
        )
        result.window["sampled"] = len(current)
        folder = model_folder(self.settings, champion)
        card = None
        if champion.tags.get(FORMAT_TAG) == "mlflow":
            card = registered_card(folder, champion.tags[DIGEST_TAG])
        task = card.task if card is not None else "classification"
        # The labels are counted in the database while Evidently works: the database's
        # driver lets go of the GIL (0.6 s over a 1M-row window on SQLite, now in parallel).
        with ThreadPoolExecutor(1, thread_name_prefix="loopline-quality") as pool:
            quality = pool.submit(self._quality, version, after, upto, task)
            drift = self._drift(champion, folder, card, current)
        result.drift = drift.to_dict()
        result.quality = quality.result()
        result.reasons = _reasons(policy, drift, result.quality)
        result.status = "drift" if result.reasons else "ok"
        _write_reports(self.settings, result, drift)
        self.state.record_check(name, version, after + 1, upto, rows, result.status, _brief(result))
        if result.reasons:
            result.trigger = self._raise(result)
        return result

    def _drift(
        self, champion: VersionInfo, folder: Path, card: ModelCard | None, current: pd.DataFrame
    ) -> DriftResult:
        policy = self.policy
        if card is not None:
            return detect_drift(
                pd.read_parquet(folder / REFERENCE),
                _current_records(current, card),
                drift_share=policy.drift_share,
                max_rows=policy.max_rows,
                **_columns_by_type(card),
            )
        if DIGEST_TAG in champion.tags:  # the reference is the registered one
            verify_digest(folder, champion.tags[DIGEST_TAG])
        schema = DatasetSchema.from_json((folder / INPUT_SCHEMA).read_text())
        return detect_drift(
            _reference(folder, schema),
            _current(current, schema),
            schema.features,
            drift_share=policy.drift_share,
            max_rows=policy.max_rows,
        )

    def _quality(self, version: str, after: int, upto: int, task: str) -> dict | None:
        if task == "regression":
            rows, mae, rmse = self.feedback.errors(after, upto, model_version=version)
            return {"rows": rows, "mae": mae, "rmse": rmse} if rows else None
        rows, correct = self.feedback.accuracy(after, upto, model_version=version)
        return {"rows": rows, "accuracy": correct / rows} if rows else None

    def _raise(self, result: MonitorResult) -> str:
        last = self.state.last_finished(result.model)
        if last is not None and time.time() - last < self.policy.cooldown_s:
            return "cooldown"
        trigger, how = self.state.raise_trigger(
            result.model,
            result.champion_version,
            result.window["first_seq"],
            result.reasons,
            result.reports.get("html", ""),
        )
        if how == "new":
            send_alert(
                self.policy.alert_url,
                "drift",
                f"{result.model} v{result.champion_version}: " + "; ".join(result.reasons),
                {"report": result.reports.get("html"), "trigger_id": trigger.id},
            )
        return how

    def start_due_retraining(self) -> list[dict]:
        """Start, take over or follow the model's open trigger (at most one)."""
        trigger = self.state.open_trigger(self.settings.model_name)
        if trigger is None:
            return []
        champion = reader(self.settings).champion(trigger.model_name)
        if trigger.state == "pending" and (
            champion is None or champion.version != trigger.model_version
        ):
            self.state.finish(
                trigger.id,
                "superseded",
                {
                    "reason": f"the champion moved from v{trigger.model_version} to "
                    f"v{champion.version if champion else 'none'}; its windows are judged afresh",
                },
            )
            return [{"trigger_id": trigger.id, "state": "superseded"}]
        if trigger.state == "submitted":
            return [self._follow(trigger)]
        labelled, _ = self.feedback.accuracy(trigger.first_seq - 1)
        if labelled < self.policy.min_labels:
            return [
                {
                    "trigger_id": trigger.id,
                    "state": trigger.state,
                    "waiting_for": f"{labelled}/{self.policy.min_labels} labelled predictions",
                }
            ]
        verdict = self._check_labels(trigger, champion)
        if self.state.hold(trigger.id, verdict.holds) and verdict.holds:
            send_alert(
                self.policy.alert_url,
                "held",
                f"retraining for {trigger.model_name} (trigger {trigger.id}) held: "
                + "; ".join(verdict.holds),
                verdict.facts,
            )
        if verdict.holds:
            return [
                {"trigger_id": trigger.id, "state": "held", "reasons": verdict.holds}
                | verdict.facts
            ]
        if not self.state.claim(trigger.id, self.owner, self.policy.lease_s):
            return []  # another monitor runs it, under a live lease
        return [self._retrain(trigger, verdict.facts["labels_through"])]

    def _check_labels(self, trigger: Trigger, champion: VersionInfo) -> LabelVerdict:
        """The window's labels, judged against the reviewers' and the champion's
        training labels (:mod:`loopline.monitoring.label_checks`)."""
        folder = model_folder(self.settings, champion)
        reference = None
        if champion.tags.get(FORMAT_TAG) == "mlflow":
            card = registered_card(folder, champion.tags[DIGEST_TAG])
            if card.task == "classification" and (folder / REFERENCE).exists():
                reference = pd.read_parquet(folder / REFERENCE)[card.label_column]
        elif (folder / REFERENCE).exists():
            schema = DatasetSchema.from_json((folder / INPUT_SCHEMA).read_text())
            indices = pd.read_parquet(folder / REFERENCE, columns=[LABEL])[LABEL]
            reference = indices.map(lambda i: schema.classes[int(i)])
        return check_labels(
            self.feedback,
            trigger.first_seq - 1,
            reviewers=self.settings.labels.reviewers,
            policy=self.policy,
            reference=reference,
        )

    def _retrain(self, trigger: Trigger, labels_through: int) -> dict:
        from loopline.monitoring.retrain import start_retraining

        stop = threading.Event()
        renewing = threading.Thread(target=self._renew, args=(trigger.id, stop), daemon=True)
        renewing.start()
        try:
            outcome = start_retraining(
                self.settings,
                trigger,
                engine=self.policy.retrain_engine,
                epochs=self.policy.retrain_epochs,
                pipeline=self.policy.pipelines.get(trigger.model_name),
                labels_through=labels_through,
                parameters=self.policy.retrain_parameters,
            )
        except Exception as exc:  # recorded and alerted; the champion is untouched
            outcome = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            stop.set()
            renewing.join()
        if outcome["state"] == "submitted":
            self.state.submitted(trigger.id, outcome)
        else:
            self._finish(trigger, outcome)
        return {"trigger_id": trigger.id, **outcome}

    def _renew(self, trigger_id: int, stop: threading.Event) -> None:
        while not stop.wait(self.policy.lease_s / 3):
            self.state.renew(trigger_id, self.owner, self.policy.lease_s)

    def _follow(self, trigger: Trigger) -> dict:
        from loopline.monitoring.retrain import follow_retraining

        outcome = follow_retraining(self.settings, trigger)
        if outcome is None:
            return {"trigger_id": trigger.id, "state": "submitted", **(trigger.run_ref or {})}
        self._finish(trigger, outcome)
        return {"trigger_id": trigger.id, **outcome}

    def _finish(self, trigger: Trigger, outcome: dict) -> None:
        self.state.finish(trigger.id, outcome["state"], outcome)
        event = {"promoted": "promotion", "failed": "failure"}.get(outcome["state"])
        if event:
            send_alert(
                self.policy.alert_url,
                event,
                f"retraining for {trigger.model_name} (trigger {trigger.id}): {outcome['state']}"
                + (f" v{outcome.get('version')}" if outcome["state"] == "promoted" else ""),
                outcome,
            )


def run_monitor(settings: Settings, policy: Policy, **options) -> MonitorResult:
    """One pass with a monitor of its own (the CLI keeps one for every pass)."""
    monitor = Monitor(settings, policy)
    try:
        return monitor.run(**options)
    finally:
        monitor.close()


def _reference(folder: Path, schema: DatasetSchema) -> pd.DataFrame:
    reference = pd.read_parquet(folder / REFERENCE)
    reference[PREDICTION] = reference[LABEL].map(lambda i: schema.classes[int(i)])
    return reference


def _current_records(window: pd.DataFrame, card: ModelCard) -> pd.DataFrame:
    """A window of a model with named columns, as the typed frame it was answered from."""
    current = typed(
        pd.DataFrame(decode_records(window["inputs"]), columns=card.columns), card.contract
    )
    labels = window["label"].to_numpy()
    current[PREDICTION] = labels.astype(float) if card.task == "regression" else labels
    return current


def _columns_by_type(card: ModelCard) -> dict:
    kinds: dict[str, list[str]] = {"numeric": [], "categorical": [], "text": []}
    for column in card.contract.columns:
        if column.kind in ("categorical", "boolean"):
            kinds["categorical"].append(column.name)
        elif column.kind == "text":
            kinds["text"].append(column.name)
        else:  # numbers and integers
            kinds["numeric"].append(column.name)
    return {
        "features": kinds["numeric"],
        "categorical": kinds["categorical"],
        "text": kinds["text"],
        "numeric_prediction": card.task == "regression",
    }


def _current(window: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    current = pd.DataFrame(np.stack(window["inputs"].to_numpy()), columns=schema.features)
    current[PREDICTION] = window["label"].to_numpy()
    return current


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
    if "quality" in policy.triggers and quality and "mae" in quality:
        if policy.max_mae is not None and quality["mae"] > policy.max_mae:
            reasons.append(
                f"quality: MAE {quality['mae']:.4g} on {quality['rows']} labelled rows "
                f"(maximum {policy.max_mae:g})"
            )
    elif "quality" in policy.triggers and quality and quality["accuracy"] < policy.min_accuracy:
        reasons.append(
            f"quality: accuracy {quality['accuracy']:.3f} on {quality['rows']} labelled rows "
            f"(minimum {policy.min_accuracy})"
        )
    return reasons


def _write_reports(settings: Settings, result: MonitorResult, drift: DriftResult) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    window = f"{result.window['first_seq']}-{result.window['last_seq']}"
    folder = (
        monitor_folder(settings)
        / "reports"
        / (f"{result.model}-v{result.champion_version}-{stamp}-seq{window}")
    )
    folder.mkdir(parents=True, exist_ok=True)
    html, summary = folder / "drift.html", folder / "summary.json"
    drift.snapshot.save_html(str(html))
    result.reports = {"html": str(html), "json": str(summary)}  # the summary names them too
    summary.write_text(json.dumps(_brief(result) | {"drift": result.drift}, indent=2))
    _add_to_workspace(settings, result.model, drift)


def _add_to_workspace(settings: Settings, model: str, drift: DriftResult) -> None:
    """Add the snapshot to the Evidently workspace that `evidently ui` shows.

    Written to the workspace's files directly: opening the ``Workspace`` reads every
    snapshot in it, so a pass would slow down with each one before it (32 snapshots took
    7-12 s). The file appears whole (written aside, then renamed), so `evidently ui`
    never reads half of one; and it is 0.5 s faster than Evidently's streamed write.
    Writers take turns under a file lock, so two monitors never create the model's
    project twice.
    """
    folder = monitor_folder(settings) / "workspace"
    folder.mkdir(parents=True, exist_ok=True)
    title = f"loopline {model}"
    with open(folder.parent / "workspace.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = LocalState(str(folder))
        projects = (state.read_project(found) for found in state.list_projects())
        project = next((p for p in projects if p.name == title), None)
        if project is None:  # the first snapshot: the workspace has none to read yet
            project = Workspace.create(str(folder)).create_project(title, description="drift")
    text = json.dumps(drift.snapshot.to_snapshot_model().dict(), cls=NumpyEncoder)
    snapshots = folder / str(project.id) / SNAPSHOTS_DIR_NAME
    snapshots.mkdir(parents=True, exist_ok=True)
    aside = snapshots / f".{uuid.uuid4()}.partial"  # not a snapshot name: the UI skips it
    aside.write_text(text)
    aside.rename(snapshots / f"{uuid.uuid4()}.json")


def _brief(result: MonitorResult) -> dict:
    drift = result.drift or {}
    return {
        "model": result.model,
        "champion_version": result.champion_version,
        "status": result.status,
        "window": result.window,
        "drifted_share": drift.get("drifted_share"),
        # per feature, for the metrics; the most drifted first, at most MAX_FEATURE_SCORES
        "feature_scores": _top_scores(drift.get("columns") or {}),
        "prediction_drift": drift.get("prediction"),
        "quality": result.quality,
        "reasons": result.reasons,
        "reports": result.reports,
    }


MAX_FEATURE_SCORES = 256  # keeps a wide table from flooding Prometheus with series


def _top_scores(columns: dict[str, dict]) -> dict[str, dict]:
    """The most drifted features first: each its drift degree (higher: more) and method."""
    ranked = sorted(columns.items(), key=lambda item: -float(item[1]["drift"]))
    return {
        name: {"drift": float(c["drift"]), "method": c["method"]}
        for name, c in ranked[:MAX_FEATURE_SCORES]
    }
