"""The closed loop with real parts: HTTP traffic -> prediction log -> Evidently -> trigger
-> a real Prefect run of the retraining pipeline -> the gate -> the server's switch."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from loopline.storage.registry import Registry
from tests.monitoring.conftest import POLICY

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loop")]


def race_for_retraining(settings, policy=POLICY) -> list[dict]:
    """One monitor of its own (its own database connections), as another host would run."""
    from loopline.monitoring.monitor import Monitor

    monitor = Monitor(settings, policy)
    try:
        return monitor.start_due_retraining()
    finally:
        monitor.close()


def test_unshifted_traffic_is_not_drift(loop):
    test = loop.split("test")
    loop.send(test.x[:200])
    result = loop.monitor.run(retrain=False)
    assert result.status == "ok", result.reasons
    assert result.drift["drifted_share"] < POLICY.drift_share
    assert not result.drift["prediction"]["drifted"]
    assert result.trigger is None
    assert result.window["rows"] == 200 and result.window["first_seq"] == 1


def test_loopline_monitor_shows_the_window_its_verdict_and_its_reports(loop):
    from typer.testing import CliRunner

    from loopline.cli import app

    loop.send(loop.split("test").x[:220])  # the default policy judges 200 rows and more
    shown = CliRunner().invoke(app, ["monitor", "--no-retrain"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "ok digits-classifier v1: predictions 201-420: 220 rows" in text, text
    assert "report (html)" in text and "drift.html" in text


def test_one_drift_episode_is_one_retraining_started_once_by_racing_monitors(loop):
    train = loop.split("train")
    x, y = 1.0 - train.x[:400], train.y[:400]  # inverted digits
    first_ids = loop.send(x[:200])
    # Two monitors judge the same window at once, then the next window drifts too.
    last = loop.monitor.state.last_check(loop.settings.model_name)["last_seq"]
    window = (last, loop.monitor.log.last_seq())
    from evidently.ui.workspace import Workspace

    from loopline.monitoring.monitor import Monitor, monitor_folder

    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda _: Monitor(loop.settings, POLICY).run(retrain=False, window=window), range(2)
            )
        )
    second_ids = loop.send(x[200:])
    later = loop.monitor.run(retrain=False)
    assert all(r.status == "drift" for r in [*results, later])
    assert sorted(r.trigger for r in results) == ["joined", "new"]
    assert later.trigger == "joined"  # the case: not a second retraining
    [trigger] = loop.monitor.state.triggers(loop.settings.model_name)
    assert trigger.state == "pending" and trigger.first_seq == window[0] + 1
    report = results[0].reports
    assert "<html" in Path(report["html"]).read_text()[:200].lower()
    assert json.loads(Path(report["json"]).read_text())["status"] == "drift"
    workspace = Workspace.create(str(monitor_folder(loop.settings) / "workspace"))
    project = workspace.search_project(f"loopline {loop.settings.model_name}")[0]
    assert len(workspace.list_runs(project.id)) >= 3
    # Without labels the trigger waits; with them, two racing monitor processes run it once.
    [waiting] = loop.monitor.start_due_retraining()
    assert waiting["state"] == "pending" and "0/100" in waiting["waiting_for"]
    assert loop.label(first_ids + second_ids, y, reviewed=y)["stored"] == 400
    # (test_state.py races monitor processes for claims; here two whole monitors race.)
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(race_for_retraining, [loop.settings] * 2))
    runs = [run for batch in started for run in batch]
    assert len(runs) == 1, runs
    assert runs[0]["state"] == "promoted", runs[0]
    assert loop.wait_for_version(runs[0]["version"]) == runs[0]["version"]
    decision = json.loads((Path(runs[0]["decision_file"]) / "decision.json").read_text())
    gate = decision["decision"]
    assert gate["champion_version"] == "1" and gate["evidence"]["p_value"] < 0.05
    assert gate["guardrail"]["rows"] > 0
    [finished] = loop.monitor.state.triggers(loop.settings.model_name, "promoted")
    # Every window's evidence joined the one trigger, each reason once.
    assert finished.reasons[: len(results[0].reasons)] == results[0].reasons
    assert len(set(finished.reasons)) == len(finished.reasons)
    assert set(later.reasons) <= set(finished.reasons)


def test_noisy_labels_retrain_but_the_champion_stays(loop):
    """Garbage feedback (random labels) on traffic the champion handles well, with no
    reviewer to catch it (test_poisoning.py has one): the gate refuses it alone."""
    registry = Registry(loop.settings)
    champion = registry.champion(loop.settings.model_name).version
    val = loop.split("val")
    ids = loop.send(1.0 - val.x[:200])  # the champion (now the retrained one) knows these
    noisy = np.random.default_rng(7).integers(0, 10, len(ids))
    loop.label(ids, noisy)
    after = loop.monitor.log.last_seq() - len(ids)
    trigger, _ = loop.monitor.state.raise_trigger(
        loop.settings.model_name, champion, after + 1, ["quality: accuracy 0.10"], ""
    )
    [run] = race_for_retraining(loop.settings, dataclasses.replace(POLICY, min_reviewed=0))
    assert run["trigger_id"] == trigger.id
    assert run["state"] == "refused", run
    decision = json.loads((Path(run["decision_file"]) / "decision.json").read_text())
    assert "not significantly better" in decision["decision"]["reasons"][0]
    assert registry.champion(loop.settings.model_name).version == champion
    assert loop.serving_version() == champion


def test_a_trigger_for_a_version_that_is_no_longer_champion_is_not_run(loop):
    champion = Registry(loop.settings).champion(loop.settings.model_name).version
    stale, _ = loop.monitor.state.raise_trigger(loop.settings.model_name, "1", 1, ["old"], "")
    assert champion != "1"
    [outcome] = loop.monitor.start_due_retraining()
    assert outcome == {"trigger_id": stale.id, "state": "superseded"}
    assert "judged afresh" in loop.monitor.state.trigger(stale.id).result["reason"]


def test_poisoned_labels_hold_the_retraining_and_name_their_source(loop):
    """The issue's attack: inverted digits labelled with the *next* class through
    /feedback. The reviewer's sample (every tenth item, honest) disagrees with them, so
    the retraining is held before it starts, with the reason; the champion stays.
    (Honest labels on the same kind of traffic, with the same review, promoted v2 in
    test_one_drift_episode_is_one_retraining_started_once_by_racing_monitors.)"""
    from typer.testing import CliRunner

    from loopline.cli import app
    from loopline.monitoring.metrics import HELD, registry_for

    name = loop.settings.model_name
    champion = Registry(loop.settings).champion(name).version
    test = loop.split("test")
    ids = loop.send(1.0 - test.x)
    poisoned = (test.y + 1) % 10
    assert loop.label(ids, poisoned, reviewed=test.y)["stored"] == len(ids)
    after = loop.monitor.log.last_seq() - len(ids)
    trigger, _ = loop.monitor.state.raise_trigger(name, champion, after + 1, ["data drift"], "")
    [run] = race_for_retraining(loop.settings)
    assert run["state"] == "held", run
    reviewed = len(ids[::10])
    [why] = [r for r in run["reasons"] if "'labeller'" in r]
    assert f"disagree with the reviewed labels on {reviewed} of the {reviewed} items" in why
    assert Registry(loop.settings).champion(name).version == champion  # nothing ran
    assert loop.monitor.state.open_trigger(name).held == run["reasons"]
    # The operator sees it: in status, and in the metrics the alert rule reads.
    status = CliRunner().invoke(app, ["status"])
    assert "retraining held" in status.output and "labeller" in status.output
    samples = {
        s.name: s.value
        for family in registry_for(loop.settings, loop.monitor.database).collect()
        for s in family.samples
    }
    assert samples[HELD] == 1.0
    loop.monitor.state.finish(trigger.id, "superseded", {"reason": "labels withdrawn"})


def test_rollback_moves_the_champion_back_and_the_server_follows(loop):
    from typer.testing import CliRunner

    from loopline.cli import app

    before = Registry(loop.settings).champion(loop.settings.model_name).version
    assert before != "1"  # promoted by the retraining above
    answer = CliRunner().invoke(app, ["rollback"])
    assert answer.exit_code == 0, answer.output
    assert Registry(loop.settings).champion(loop.settings.model_name).version == "1"
    assert loop.wait_for_version("1") == "1"
    status = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)
    assert status["champion"]["version"] == "1"
    assert status["last_check"]["verdict"] == "drift"
    assert status["last_retraining"]["state"] in ("promoted", "refused", "superseded")
    assert status["open_trigger"] is None
