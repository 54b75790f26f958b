"""A home made by the previous release keeps working with this one.

Release 0.1.0 installed top-level ``components``, ``pipelines``, ``serving`` and
``monitoring`` packages; this release moved them under ``loopline``. A user's home holds
what the old code wrote: the platform database (with logged predictions and labels), the
MLflow registry with its champion and artifacts, the Prefect server's state, the task
cache. The old release's code is taken from git history and run as a user ran it; then
this release reads, serves and extends the same home."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_digits

from loopline.core.settings import load_settings
from loopline.serving.server import free_port, start_server
from loopline.storage.database import open_for_reading
from loopline.storage.feedback import FeedbackStore
from tests.conftest import VENV_BIN, logged

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "e403e37"  # release 0.1.0: the last commit with the top-level packages
# What README's "Where outputs go" promises under LOOPLINE_HOME after a training run.
LAYOUT = ("artifacts", "mlartifacts", "cache", "prefect", "logs", "loopline.db", "mlflow.db")

# What a 0.1.0 server logged, written with 0.1.0's own prediction log (a served request
# costs a `bentoml serve` start; the rows are the same): three digits, answered by v1.
OLD_PREDICTIONS = """
import numpy as np
from sklearn.datasets import load_digits
from components.database import open_database
from components.settings import load_settings
from serving.prediction_log import Answer, PredictionLog

rows = (load_digits().data[:3] / 16).astype(np.float32)
database = open_database(load_settings(), migrate=True)
log = PredictionLog(database)
for i, row in enumerate(rows):
    probabilities = np.full((1, 10), 0.01)
    probabilities[0, i] = 0.91
    answer = Answer(f"old-{i}", "1", row[None], [str(i)], probabilities)
    assert log.append(answer).outcome == "new"
log.close()
database.close()
"""


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


def schema(path: Path) -> tuple[str, list]:
    """The platform database's Alembic revision and its tables' and indexes' SQL."""
    with sqlite3.connect(path) as connection:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        objects = connection.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    return revision, objects


def run_layout(home: Path, summary: dict) -> set[str]:
    """A run's files under artifacts/<run>/, relative to the run's folder."""
    model_files = Path(summary["paths"]["model files"])
    run = model_files.relative_to(home / "artifacts").parts[0]
    folder = home / "artifacts" / run
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_home_made_by_the_previous_release_keeps_working(previous_release, tmp_path):
    user_home, home = tmp_path / "user", tmp_path / "home"
    user_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.pop("RAY_ADDRESS", None)  # --workers 0 trains in-process; no session Ray head
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

    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\nold-0,0\nold-1,1\nold-2,7\n")  # old-2 was wrong

    # -- release 0.1.0 makes the home ------------------------------------------------------
    upgraded = old("db", "upgrade")  # the platform database, at 0.1.0's schema
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    try:
        made = old("run", "training", "--epochs", "1", "--workers", "0", "--json")
        assert made.returncode == 0, made.stderr[-3000:]
        first = json.loads(made.stdout)
        assert first["decision"]["promoted"] is True and first["decision"]["version"] == "1"
    finally:
        old_stop = old("server", "--stop")
    assert old_stop.returncode == 0, old_stop.stderr[-3000:]
    wrote = subprocess.run(
        [sys.executable, "-c", OLD_PREDICTIONS],
        env={**env, "PYTHONPATH": str(previous_release)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrote.returncode == 0, wrote.stderr[-3000:]
    attached = old("feedback", str(labels))
    assert attached.returncode == 0, attached.stderr[-3000:]
    assert json.loads(attached.stdout.splitlines()[-1])["stored"] == 3
    old_status = old("status", "--json")
    assert old_status.returncode == 0, old_status.stderr[-3000:]

    files = {name: (home / name).stat().st_ino for name in ("loopline.db", "mlflow.db")}
    old_schema = schema(home / "loopline.db")
    old_layout = {p.name for p in home.iterdir()}
    for kept in LAYOUT:
        assert kept in old_layout, kept

    # -- this release, on the same home ----------------------------------------------------
    settings = load_settings({"LOOPLINE_HOME": str(home)})
    try:
        status = new("status", "--json")
        assert status.returncode == 0, status.stderr[-3000:]
        assert json.loads(status.stdout) == json.loads(old_status.stdout)  # the same answer
        champion = json.loads(status.stdout)["champion"]
        assert champion["version"] == "1"
        for metric, value in first["decision"]["metrics"].items():
            assert champion["metrics"][metric] == pytest.approx(value, abs=1e-6), metric

        upgraded = new("db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr[-3000:]
        # 0003 adds label provenance: the old tables and indexes keep their names, the
        # feedback table gains its columns, and label_events is new.
        migrated = schema(home / "loopline.db")
        revision, objects = migrated
        assert old_schema[0] == "0002" and revision == "0003"
        names = {name for _, name, _ in objects}
        assert {name for _, name, _ in old_schema[1]} | {"label_events"} <= names
        feedback_sql = next(sql for _, name, sql in objects if name == "feedback")
        assert all(column in feedback_sql for column in ("source", "latest", "conflicts"))

        # The old release's predictions and labels are there, and this release adds to them.
        database = open_for_reading(settings)
        try:
            assert FeedbackStore(database).accuracy(model_version="1") == (3, 2)
        finally:
            database.close()
        again = new("feedback", str(labels))  # the same labels again: repeats, not new
        assert again.returncode == 0, again.stderr[-3000:]
        repeated = json.loads(again.stdout.splitlines()[-1])
        assert repeated["stored"] == 0 and repeated["repeated"] == 3

        # This release serves the old release's champion, and logs the answer beside the old.
        server = start_server(
            settings,
            port=free_port(),
            log_path=tmp_path / "serve.log",
            env={"HOME": str(user_home)},
        )
        try:
            server.wait_ready()
            rows = load_digits().data[:2] / 16
            answer = httpx.post(
                f"{server.url}/predict",
                json={"instances": rows.tolist()},
                headers={"X-Request-ID": "new-0"},
                timeout=30,
            )
        finally:
            server.stop()
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "1" and body["request_id"] == "new-0"
        assert len(body["predictions"]) == 2
        log = logged(settings)
        assert log["request_id"].tolist() == ["old-0", "old-1", "old-2", "new-0", "new-0"]

        # The gate of a new training loads the old release's champion to compare with it.
        ran = new("run", "training", "--epochs", "1", "--workers", "0", "--seed", "1", "--json")
        assert ran.returncode == 0, ran.stderr[-3000:]
        second = json.loads(ran.stdout)
        decision = second["decision"]
        assert decision["version"] == "2"
        gate = decision["decision"]  # the old champion, loaded and scored on the same rows
        assert gate["champion_version"] == "1" and gate["champion_score"] > 0.1
        after = new("status", "--json")
        assert after.returncode == 0, after.stderr[-3000:]
        expected = "2" if decision["promoted"] else "1"
        assert json.loads(after.stdout)["champion"]["version"] == expected
    finally:
        stopped = new("server", "--stop")
    assert stopped.returncode == 0, stopped.stderr[-3000:]

    # The same files, extended in place; the layout under LOOPLINE_HOME is unchanged.
    assert {name: (home / name).stat().st_ino for name in files} == files
    assert schema(home / "loopline.db") == migrated  # migrated once, then only written to
    assert old_layout <= {p.name for p in home.iterdir()}
    made_files, ran_files = run_layout(home, first), run_layout(home, second)
    if not decision["promoted"]:  # no Bento to package: the condition's task was skipped
        made_files = {f for f in made_files if not f.startswith("condition-1/")}
    # This release's trained model is an MLflow Model too: its folder gains an MLmodel.
    assert ran_files == made_files | {"train/model/MLmodel"}
    assert not (user_home / ".prefect").exists()
