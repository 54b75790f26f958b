"""``loopline run`` without Prefect's client (issues 28 §3 and 29). The first run in a new
home does not wait for its Prefect server: it goes at once, with the same retries, cache
and failures as under Prefect, and is recorded in the home's server once that is up,
exactly once. A warm home's run is recorded in the server as it runs: a flow run, Running
while its tasks run, a task run per task with its states, artifacts and log lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loopline.core.settings import load_settings
from loopline.pipelines.local import prefect_server, run_history
from loopline.pipelines.local.recorded_engine import RecordedEngine
from loopline.pipelines.local.results import TaskRecord
from loopline.serving.server import free_port
from tests.conftest import VENV_BIN
from tests.pipelines import engine_pipelines as p

ONE_STEP = Path(__file__).with_name("plus_one.py")


def flow_runs(api: str, name: str | None = None) -> list[dict]:
    body = {"flow_runs": {"name": {"any_": [name]}}} if name else {}
    answer = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30)
    answer.raise_for_status()
    return answer.json()


def task_runs(api: str, flow_run_id: str) -> dict[str, dict]:
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    answer = httpx.post(f"{api}/task_runs/filter", json=body, timeout=30)
    answer.raise_for_status()
    return {t["name"]: t for t in answer.json()}


def states(api: str, task_run_id: str) -> list[str]:
    answer = httpx.get(f"{api}/task_run_states/", params={"task_run_id": task_run_id}, timeout=30)
    answer.raise_for_status()
    return [s["name"] for s in sorted(answer.json(), key=lambda s: s["timestamp"])]


@pytest.fixture
def deferred(tmp_path):
    runner = RecordedEngine(load_settings({"LOOPLINE_HOME": str(tmp_path / "home")}))
    yield runner
    runner.close()


class Watching:
    """A listener that looks at the run's record in Prefect as its first task starts."""

    def __init__(self, api: str, run_name: str | None = None):
        self.api = api
        self.seen: dict[str, str] = {}  # flow run state while the first task ran

    def task_started(self, name, folder) -> None:
        if self.seen:
            return
        run_name = folder.parent.name if "." not in name else folder.parents[1].name
        deadline = time.monotonic() + 60  # the recording posts on its own thread
        while time.monotonic() < deadline:
            if (found := flow_runs(self.api, run_name)) and found[0]["state_type"] == "RUNNING":
                self.seen = {"state": found[0]["state_type"], "task": name}
                return
            time.sleep(0.05)
        self.seen = {"state": "never seen", "task": name}

    def task_finished(self, record: TaskRecord) -> None: ...


def test_a_warm_homes_run_is_recorded_in_prefect_as_it_runs(tmp_path, prefect_api):
    """Against the session's real server: Running while a task runs, then the final states
    of the flow run and of each task run (retried, failed, skipped, cached), its tags and
    parameters, the metrics as an artifact and loopline's log lines."""
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    watching = Watching(prefect_api)
    live = RecordedEngine(settings, prefect_api, listener=watching)
    try:
        marker = tmp_path / "attempts"
        retried = live.run(p.with_retry, {"marker": str(marker)}, enable_cache=False)
        assert retried.succeeded and retried.outputs == {"Output": 2}, retried.error
        assert watching.seen == {"state": "RUNNING", "task": "flaky"}
        [run] = flow_runs(prefect_api, retried.run_name)
        assert retried.flow_run_id == run["id"]
        assert run["state_type"] == "COMPLETED" and run["tags"] == ["loopline"]
        assert run["parameters"] == {"marker": str(marker)}
        flaky = task_runs(prefect_api, run["id"])["flaky"]
        assert flaky["state_type"] == "COMPLETED"
        assert states(prefect_api, flaky["id"]) == ["Running", "AwaitingRetry", "Retrying", "Completed"]  # fmt: skip

        broken = tmp_path / "broken"
        broken.touch()
        failed = live.run(p.failing, {"marker": str(broken)})
        assert not failed.succeeded and failed.failed_task == "fail-if-present"
        [run] = flow_runs(prefect_api, failed.run_name)
        assert run["state_type"] == "FAILED" and "refusing to run while" in run["state"]["message"]
        tasks = task_runs(prefect_api, run["id"])
        assert {n: (t["state_type"], t["state_name"]) for n, t in tasks.items()} == {"add": ("COMPLETED", "Completed"), "fail-if-present": ("FAILED", "Failed"), "add-2": ("COMPLETED", "Skipped")}  # fmt: skip

        broken.unlink()
        resumed = live.run(p.failing, {"marker": str(broken)})
        [run] = flow_runs(prefect_api, resumed.run_name)
        assert run["state_type"] == "COMPLETED"
        assert task_runs(prefect_api, run["id"])["add"]["state_name"] == "Cached"
        body = {"logs": {"flow_run_id": {"any_": [run["id"]]}}}
        logged = httpx.post(f"{prefect_api}/logs/filter", json=body, timeout=30).json()
        assert any("served from cache" in line["message"] for line in logged)

        scored = live.run(p.scoring, {}, enable_cache=False)
        [run] = flow_runs(prefect_api, scored.run_name)
        body = {"flow_runs": {"id": {"any_": [run["id"]]}}}
        made = httpx.post(f"{prefect_api}/artifacts/filter", json=body, timeout=30).json()
        [table] = made
        assert table["type"] == "table" and table["key"] == "score-metrics"
        assert {row["metric"]: row["value"] for row in json.loads(table["data"])} == {"accuracy": 0.9, "f1": 0.8}  # fmt: skip
        assert table["task_run_id"] == task_runs(prefect_api, run["id"])["score"]["id"]
    finally:
        live.close()
    assert run_history.pending(settings.prefect_home) == []  # all of it recorded live


def test_a_run_whose_server_does_not_answer_is_recorded_later_once(tmp_path, prefect_api):
    """No server at the URL: the run goes on, and its record waits for the supervisor. A
    run recorded live and then again from a record of its key (a live recording cut
    short) is one flow run with one task run per task."""
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    gone = RecordedEngine(settings, f"http://127.0.0.1:{free_port()}/api")
    try:
        result = gone.run(p.failing, {"marker": str(tmp_path / "absent")})
    finally:
        gone.close()
    assert result.succeeded and result.flow_run_id is None
    assert len(run_history.pending(settings.prefect_home)) == 1
    assert run_history.import_pending(settings.prefect_home, prefect_api) == 1
    [run] = flow_runs(prefect_api, result.run_name)
    assert run["state_type"] == "COMPLETED" and "recorded-after-run" in run["tags"]
    assert len(task_runs(prefect_api, run["id"])) == 3

    live = RecordedEngine(settings, prefect_api)
    try:
        twice = live.run(p.failing, {"marker": str(tmp_path / "absent")})
    finally:
        live.close()
    [first] = flow_runs(prefect_api, twice.run_name)
    before = {n: t["state_name"] for n, t in task_runs(prefect_api, first["id"]).items()}
    assert before == {"add": "Cached", "fail-if-present": "Cached", "add-2": "Cached"}
    run_history.defer(settings.prefect_home, twice, {}, time.time(), key=first["idempotency_key"])
    assert run_history.import_pending(settings.prefect_home, prefect_api) == 1
    [once] = flow_runs(prefect_api, twice.run_name)
    assert once["id"] == first["id"] and once["state_type"] == "COMPLETED"
    after = {n: t["state_name"] for n, t in task_runs(prefect_api, once["id"]).items()}
    assert after == before


def test_retries_failures_and_cache_hold_as_under_prefect(deferred, tmp_path, prefect_api):
    """The executor's promises without Prefect: a transient failure retried by its policy,
    a failed task failing the run (its downstream skipped), and a re-run from the cache.
    Then the records reach a real server: states, names and the error, once each."""
    marker = tmp_path / "attempts"
    retried = deferred.run(p.with_retry, {"marker": str(marker)}, enable_cache=False)
    assert retried.succeeded, retried.error
    assert retried.outputs == {"Output": 2} and marker.read_text() == "2"

    broken = tmp_path / "broken"
    broken.touch()
    failed = deferred.run(p.failing, {"marker": str(broken)})
    assert not failed.succeeded and failed.failed_task == "fail-if-present"
    assert {r.name: r.status for r in failed.records} == {"add": "succeeded", "fail-if-present": "failed", "add-2": "skipped"}  # fmt: skip
    broken.unlink()
    resumed = deferred.run(p.failing, {"marker": str(broken)})
    assert resumed.succeeded and {r.name: r.cached for r in resumed.records}["add"] is True

    home = deferred.settings.prefect_home
    records = run_history.pending(home)
    assert len(records) == 3
    first = records[0].read_bytes()
    assert run_history.import_pending(home, prefect_api) == 3
    assert run_history.pending(home) == []
    records[0].write_bytes(first)  # tried again, as after a supervisor killed mid-import
    assert run_history.import_pending(home, prefect_api) == 1

    # A record the server refuses, or cannot read, is set aside and blocks no other.
    (home / "pending" / "broken.json").write_text("{not json")
    (home / "pending" / "wrong.json").write_text(json.dumps({**json.loads(first), "flow": ""}))
    records[1].write_bytes(first)
    assert run_history.import_pending(home, prefect_api) == 1
    assert sorted(p.name for p in (home / "pending" / "refused").iterdir()) == ["broken.json", "broken.why", "wrong.json", "wrong.why"]  # fmt: skip
    assert "422" in (home / "pending" / "refused" / "wrong.why").read_text()

    [run] = flow_runs(prefect_api, failed.run_name)
    assert run["state_type"] == "FAILED" and "refusing to run while" in run["state"]["message"]
    assert "before this home's Prefect server was up" in run["state"]["message"]
    assert run["parameters"] == {"marker": str(broken)}
    tasks = task_runs(prefect_api, run["id"])
    assert {n: t["state_type"] for n, t in tasks.items()} == {"add": "COMPLETED", "fail-if-present": "FAILED", "add-2": "COMPLETED"}  # fmt: skip
    assert tasks["add-2"]["state_name"] == "Skipped"
    [again] = flow_runs(prefect_api, resumed.run_name)
    assert task_runs(prefect_api, again["id"])["add"]["state_name"] == "Cached"
    for result in (retried, resumed):  # each recorded once, whichever import it came in
        [one] = flow_runs(prefect_api, result.run_name)
        assert one["state_type"] == "COMPLETED"


@pytest.mark.slow
def test_a_new_homes_first_run_goes_before_its_server_and_is_recorded_there(tmp_path):
    (tmp_path / "user").mkdir()
    shutil.copy(ONE_STEP, tmp_path / "plus_one.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.update(
        HOME=str(tmp_path / "user"),
        LOOPLINE_HOME=str(tmp_path / "home"),
        LOOPLINE_PREFECT_PORT=str(free_port()),
    )
    settings = load_settings(env)

    def run() -> dict:
        done = subprocess.run(
            [str(VENV_BIN / "loopline"), "run", str(tmp_path / "plus_one.py"), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        return json.loads(done.stdout)

    try:
        first = run()
        assert first["outputs"] == {"Output": 2}
        # The server it started meanwhile comes up and records the run, once.
        deadline = time.monotonic() + 240
        while (server := prefect_server.running(settings)) is None or run_history.pending(
            settings.prefect_home
        ):
            assert time.monotonic() < deadline, (settings.logs / "prefect-server.log").read_text()
            time.sleep(0.5)
        [recorded] = flow_runs(server.api_url, first["run"])
        assert recorded["state_type"] == "COMPLETED" and "recorded-after-run" in recorded["tags"]
        assert task_runs(server.api_url, recorded["id"])["add"]["state_type"] == "COMPLETED"
        # The next run finds the server up: recorded there as it runs, by the CLI.
        second = run()
        [flow_run] = flow_runs(server.api_url, second["run"])
        assert flow_run["state_type"] == "COMPLETED" and flow_run["tags"] == ["loopline"]
        add = task_runs(server.api_url, flow_run["id"])["add"]
        assert states(server.api_url, add["id"]) == [
            "Running",
            "Cached",
        ]  # as the first run left it
        assert run_history.pending(settings.prefect_home) == []
    finally:
        prefect_server.stop(settings)


class Interrupting:
    """A listener that stands in for Ctrl-C as the first task starts."""

    def task_started(self, name, folder) -> None:
        raise KeyboardInterrupt

    def task_finished(self, record: TaskRecord) -> None: ...


def test_an_interrupted_run_ends_cancelled_in_prefect_not_running(tmp_path, prefect_api):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    live = RecordedEngine(settings, prefect_api, listener=Interrupting())
    try:
        with pytest.raises(KeyboardInterrupt):
            live.run(p.scoring, {}, enable_cache=False)
    finally:
        live.close()
    newest = {"sort": "EXPECTED_START_TIME_DESC", "limit": 1}  # this test's run
    [run] = httpx.post(f"{prefect_api}/flow_runs/filter", json=newest, timeout=30).json()
    assert run["state_type"] == "CANCELLED", run["state_type"]
    assert run["tags"] == ["loopline"] and run["state"]["message"].startswith("KeyboardInterrupt")
