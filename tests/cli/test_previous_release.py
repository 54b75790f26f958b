"""A home made by the previous release keeps working with this one.

Release 0.1.0 installed top-level ``components``, ``pipelines``, ``serving`` and
``monitoring`` packages; this release moved them under ``loopline``. A user's home holds
what the old code wrote: the platform database, the MLflow registry with its champion
and artifacts, the Prefect server's state, the task cache. The old release's code is
taken from git history and run as a user ran it; then this release reads and extends
the same home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.serving.server import free_port
from tests.conftest import VENV_BIN

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "e403e37"  # release 0.1.0: the last commit with the top-level packages


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"], capture_output=True
    )
    if found.returncode != 0:
        pytest.skip(f"release 0.1.0 ({PREVIOUS}) is not in this clone's history (shallow?)")
    tree = tmp_path_factory.mktemp("release-0.1.0")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    assert (tree / "components" / "steps.py").exists()  # the old layout, as released
    return tree


def test_a_home_made_by_the_previous_release_keeps_working(previous_release, tmp_path):
    user_home, home = tmp_path / "user", tmp_path / "home"
    user_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.update(HOME=str(user_home), LOOPLINE_HOME=str(home), LOOPLINE_PREFECT_PORT=str(free_port()))
    env.pop("PYTHONPATH", None)

    def old(*args: str) -> subprocess.CompletedProcess:
        """The 0.1.0 CLI: its own packages first on the path (cwd is not the checkout)."""
        command = [sys.executable, "-c", "from loopline.cli import main; main()", *args]
        return subprocess.run(
            command,
            env={**env, "PYTHONPATH": str(previous_release)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def new(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / "loopline"), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )

    assert old("db", "upgrade").returncode == 0  # the platform database, at 0.1.0's schema
    try:
        made = old("run", "training", "--epochs", "1", "--workers", "0", "--json")
        assert made.returncode == 0, made.stderr[-3000:]
        assert json.loads(made.stdout)["decision"]["promoted"] is True
    finally:
        old("server", "--stop")
    files = {name: (home / name).stat().st_ino for name in ("loopline.db", "mlflow.db")}

    try:
        status = new("status", "--json")
        assert status.returncode == 0, status.stderr[-3000:]
        assert json.loads(status.stdout)["champion"]["version"] == "1"
        upgraded = new("db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr[-3000:]

        # The gate of a new training loads the old release's champion to compare with it.
        ran = new("run", "training", "--epochs", "1", "--workers", "0", "--seed", "1", "--json")
        assert ran.returncode == 0, ran.stderr[-3000:]
        decision = json.loads(ran.stdout)["decision"]
        assert decision["version"] == "2"
        gate = decision["decision"]  # the old champion, loaded and scored on the same rows
        assert gate["champion_version"] == "1" and gate["champion_score"] > 0.1
        after = json.loads(new("status", "--json").stdout)["champion"]["version"]
        assert after == ("2" if decision["promoted"] else "1")
    finally:
        stopped = new("server", "--stop")
    assert stopped.returncode == 0
    # The same files, extended in place; the layout under LOOPLINE_HOME is unchanged.
    assert {name: (home / name).stat().st_ino for name in files} == files
    for kept in ("artifacts", "mlartifacts", "prefect", "logs", "cache"):
        assert (home / kept).is_dir(), kept
    assert not (user_home / ".prefect").exists()
