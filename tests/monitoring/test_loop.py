"""The closed loop with real parts: HTTP traffic -> prediction log -> Evidently -> trigger
-> a real Prefect run of the retraining pipeline -> the gate -> the server's switch."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from evidently.ui.workspace import Workspace

from components.registry import Registry
from monitoring.monitor import monitor_folder, run_monitor, start_due_retraining
from monitoring.state import MonitorState
from tests.monitoring.conftest import POLICY

pytestmark = pytest.mark.slow


def race_for_retraining(policy, answers) -> None:
    from components.settings import load_settings

    settings = load_settings()  # LOOPLINE_HOME and PREFECT_API_URL come from the parent
    answers.put(start_due_retraining(settings, policy, MonitorState(monitor_folder(settings))))


def wait_for_version(loop, version: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and loop.serving_version() != version:
        time.sleep(0.3)
    return loop.serving_version()


def test_unshifted_traffic_is_not_drift(loop):
    test = loop.split("test")
    loop.send(test.x[:200])
    result = run_monitor(loop.settings, POLICY, retrain=False)
    assert result.status == "ok", result.reasons
    assert result.drift["drifted_share"] < POLICY.drift_share
    assert not result.drift["prediction"]["drifted"]
    assert result.trigger is None


def test_shifted_traffic_is_drift_and_two_concurrent_monitors_start_one_retraining(loop):
    train = loop.split("train")
    x, y = 1.0 - train.x[:400], train.y[:400]  # inverted digits
    ids = loop.send(x)
    state = MonitorState(monitor_folder(loop.settings))
    start = state.last_check(loop.settings.model_name)["window_end"]
    end = time.time()
    # Two monitors judge the same window at once: one trigger between them.
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_monitor(
            loop.settings, POLICY, start=start, end=end, retrain=False), range(2)))  # fmt: skip
    assert all(r.status == "drift" for r in results)
    assert sorted(r.trigger for r in results) == ["duplicate", "new"]
    assert results[0].drift["drifted_share"] > 0.5
    report = results[0].reports
    assert "<html" in Path(report["html"]).read_text()[:200].lower()
    assert json.loads(Path(report["json"]).read_text())["status"] == "drift"
    workspace = Workspace.create(str(monitor_folder(loop.settings) / "workspace"))
    project = workspace.search_project(f"loopline {loop.settings.model_name}")[0]
    assert len(workspace.list_runs(project.id)) >= 2
    # Without labels the trigger waits; with them, two racing starters run it once.
    waiting = start_due_retraining(loop.settings, POLICY, state)
    assert waiting[0]["state"] == "pending" and "0/100" in waiting[0]["waiting_for"]
    assert loop.label(ids, y)["stored"] == 400
    # Two monitor processes race for the trigger, as two `loopline monitor` would.
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    racers = [context.Process(target=race_for_retraining, args=(POLICY, answers)) for _ in range(2)]
    for racer in racers:
        racer.start()
    started = [answers.get(timeout=600) for _ in racers]
    for racer in racers:
        racer.join()
    runs = [run for batch in started for run in batch]
    assert len(runs) == 1, runs
    assert runs[0]["state"] == "promoted", runs[0]
    assert wait_for_version(loop, runs[0]["version"]) == runs[0]["version"]
    decision = json.loads((Path(runs[0]["decision_file"]) / "decision.json").read_text())
    assert decision["decision"]["champion_version"] == "1"
    assert decision["metrics"]["accuracy"] > decision["decision"]["champion_score"]
    [finished] = state.triggers(loop.settings.model_name, "promoted")
    assert finished.report == report["html"] and finished.reasons == results[0].reasons


def test_worse_challenger_is_refused_and_the_champion_keeps_serving(loop):
    registry = Registry(loop.settings)
    champion = registry.champion(loop.settings.model_name).version
    state = MonitorState(monitor_folder(loop.settings))
    # A trigger on traffic the champion handles well, retrained for one epoch only.
    val = loop.split("val")
    ids = loop.send(1.0 - val.x[:120])
    loop.label(ids, val.y[:120])
    trigger = state.add_trigger(loop.settings.model_name, champion, time.time() - 60, ["test"], "")
    weak = dataclasses.replace(POLICY, retrain_epochs=1, min_labels=50)
    [run] = start_due_retraining(loop.settings, weak, state)
    assert run["trigger_id"] == trigger.id
    assert run["state"] == "refused", run
    assert registry.champion(loop.settings.model_name).version == champion
    assert loop.serving_version() == champion


def test_rollback_moves_the_champion_back_and_the_server_follows(loop):
    from typer.testing import CliRunner

    from loopline.cli import app

    before = Registry(loop.settings).champion(loop.settings.model_name).version
    assert before != "1"  # promoted by the retraining above
    answer = CliRunner().invoke(app, ["rollback"])
    assert answer.exit_code == 0, answer.output
    assert Registry(loop.settings).champion(loop.settings.model_name).version == "1"
    assert wait_for_version(loop, "1") == "1"
    status = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)
    assert status["champion"]["version"] == "1"
    assert status["last_check"]["verdict"] == "drift"
    assert status["last_retraining"]["state"] in ("promoted", "refused")
    assert status["pending_triggers"] == []
