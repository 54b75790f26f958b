"""The first run in a new home does not wait for its Prefect server (issue 28 §3): it goes
at once, with the same retries, cache and failures as under Prefect, and is recorded in
the home's server once that is up, exactly once. The next run is a Prefect flow run."""

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
from loopline.pipelines.local.deferred_engine import DeferredEngine
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


@pytest.fixture
def deferred(tmp_path):
    runner = DeferredEngine(load_settings({"LOOPLINE_HOME": str(tmp_path / "home")}))
    yield runner
    runner.close()


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
        # The next run finds the server up: a Prefect flow run of its own.
        second = run()
        [flow_run] = flow_runs(server.api_url, second["run"])
        assert (
            flow_run["state_type"] == "COMPLETED" and "recorded-after-run" not in flow_run["tags"]
        )
    finally:
        prefect_server.stop(settings)
