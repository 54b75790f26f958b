"""A new user's first commands: a fresh HOME and LOOPLINE_HOME, no Prefect server, no
caches. Two runs and a status at once must all succeed, share one Prefect server kept
under LOOPLINE_HOME, and leave nothing in HOME; `loopline server --stop` ends it all."""

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from loopline.core.settings import load_settings
from loopline.pipelines.local import prefect_server, run_history
from loopline.serving.server import free_port
from tests.conftest import VENV_BIN

pytestmark = pytest.mark.slow

ONE_STEP = Path(__file__).parents[1] / "pipelines" / "plus_one.py"


def test_two_first_runs_and_a_status_at_once_on_a_fresh_machine(tmp_path):
    user_home, home = tmp_path / "user", tmp_path / "loopline"
    user_home.mkdir()
    (tmp_path / "plus_one.py").write_text(ONE_STEP.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.update(HOME=str(user_home), LOOPLINE_HOME=str(home), LOOPLINE_PREFECT_PORT=str(free_port()))

    def loopline(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "loopline"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    with ThreadPoolExecutor(3) as pool:
        training = pool.submit(
            loopline, "run", "training", "--epochs", "1", "--workers", "0", "--json"
        )
        step = pool.submit(loopline, "run", str(tmp_path / "plus_one.py"), "--json")
        status = pool.submit(loopline, "status", "--json")
        results = [training.result(), step.result(), status.result()]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(results[0].stdout)["decision"]["promoted"] is True
    assert json.loads(results[1].stdout)["outputs"] == {"Output": 2}
    assert json.loads(results[2].stdout)["model"] == "digits-classifier"
    for result in results[:2]:  # a clean terminal: no engine's own log lines
        assert "Flow run" not in result.stderr and "Traceback" not in result.stderr

    # One server for the home, kept with it, which records both runs (they did not wait
    # for it); nothing in the user's HOME.
    settings = load_settings({"LOOPLINE_HOME": str(home)})
    deadline = time.monotonic() + 300
    while (up := prefect_server.running(settings)) is None or run_history.pending(home / "prefect"):
        assert time.monotonic() < deadline, (home / "logs" / "prefect-server.log").read_text()
        time.sleep(0.5)
    names = {r["name"] for r in httpx.post(f"{up.api_url}/flow_runs/filter", json={}).json()}
    assert {json.loads(r.stdout)["run"] for r in results[:2]} <= names
    server = json.loads((home / "prefect" / "server.json").read_text())
    assert (home / "prefect" / "prefect.db").exists()
    assert not (user_home / ".prefect").exists(), list(user_home.iterdir())
    assert json.loads(loopline("status", "--json").stdout)["champion"]["version"] == "1"

    stopped = loopline("server", "--stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    assert (
        not psutil.pid_exists(server["pid"]) or psutil.Process(server["pid"]).status() == "zombie"
    )
    assert not (home / "prefect" / "server.json").exists()


def test_status_on_an_empty_home_says_so_and_writes_nothing(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "LOOPLINE_HOME": str(tmp_path / "none")}
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "has no champion yet" in result.stderr
    assert list(tmp_path.iterdir()) == []
