"""Monitoring's memory, on SQLite and PostgreSQL: one open trigger per model however many
drift events race, one claim per trigger, and leases that a killed monitor loses."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from loopline.storage.checks import MonitorState


def test_one_drift_episode_is_one_trigger_whatever_races(database):
    state = MonitorState(database)

    def raise_(n: int):
        return state.raise_trigger("m", "1", 101, [f"data drift in window {n % 2}"], "report.html")

    with ThreadPoolExecutor(8) as pool:
        raised = list(pool.map(raise_, range(16)))
    assert [how for _, how in raised].count("new") == 1
    assert len({t.id for t, _ in raised}) == 1
    [trigger] = state.triggers("m")
    # Later evidence joins the open trigger's reasons instead of opening a second one.
    assert trigger.reasons == ["data drift in window 0", "data drift in window 1"] or (
        trigger.reasons == ["data drift in window 1", "data drift in window 0"]
    )
    assert trigger.state == "pending" and trigger.first_seq == 101
    # Another model is another trigger; a finished trigger makes room for a new one.
    assert state.raise_trigger("other", "1", 1, ["x"], "")[1] == "new"
    state.finish(trigger.id, "promoted", {"version": "2"})
    assert state.triggers("m", "promoted")[0].result == {"version": "2"}
    assert state.raise_trigger("m", "2", 300, ["quality"], "")[1] == "new"
    assert state.last_finished("m") is not None


def test_one_claim_wins_and_an_expired_lease_is_taken_over(database):
    state = MonitorState(database)
    trigger, _ = state.raise_trigger("m", "1", 1, ["drift"], "")
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda n: state.claim(trigger.id, f"monitor-{n}", 60), range(16)))
    assert claims.count(True) == 1
    owner = state.trigger(trigger.id).lease_owner
    assert state.renew(trigger.id, owner, 60) and not state.renew(trigger.id, "someone-else", 60)
    assert not state.claim(trigger.id, "late", 60)  # the lease is alive
    state.renew(trigger.id, owner, -1)  # as if its holder stopped renewing long ago
    assert state.claim(trigger.id, "late", 60)
    assert state.trigger(trigger.id).lease_owner == "late"
    state.submitted(trigger.id, {"engine": "kubeflow", "run_id": "r-1"})
    found = state.trigger(trigger.id)
    assert found.state == "submitted" and found.run_ref["run_id"] == "r-1"
    assert state.raise_trigger("m", "1", 9, ["more drift"], "")[1] == "joined"  # still open


RACER = """
import os, sys, time
from loopline.storage.database import open_database
from loopline.core.settings import load_settings
from loopline.storage.checks import MonitorState
state = MonitorState(open_database(load_settings()))
asked = time.monotonic()  # the lease cannot have begun before this (one clock for every process)
won = state.claim(int(sys.argv[1]), f"monitor-{os.getpid()}", float(sys.argv[2]))
print("WON" if won else "LOST", asked, flush=True)
time.sleep(60)  # holds the claim (never renews, never finishes) until killed
"""


def test_three_monitor_processes_race_and_a_killed_one_blocks_no_longer_than_its_lease(
    postgres_url, tmp_path
):
    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database

    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": postgres_url}
    state = MonitorState(open_database(load_settings(env), migrate=True))
    trigger, _ = state.raise_trigger("m", "1", 1, ["drift"], "")
    lease = 3.0
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(trigger.id), str(lease)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    answers = [r.stdout.readline().split() for r in racers]
    assert sorted(word for word, _ in answers) == ["LOST", "LOST", "WON"], answers
    # Timed from the winner's own request, not from when the slowest racer answered.
    [claimed] = [float(asked) for word, asked in answers if word == "WON"]
    for racer in racers:  # kill -9: the winner never finishes its retraining
        racer.send_signal(signal.SIGKILL)
        racer.wait()
    assert not state.claim(trigger.id, "next", lease)  # its lease still holds
    while not state.claim(trigger.id, "next", lease):
        assert time.monotonic() - claimed < lease + 5, "the dead monitor's lease never expired"
        time.sleep(0.1)
    assert time.monotonic() - claimed >= lease - 0.5
    assert state.trigger(trigger.id).lease_owner == "next"


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "not a url", "sqlite:///"])
def test_a_malformed_database_url_names_the_variable(bad, tmp_path):
    from loopline.core.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="LOOPLINE_DATABASE_URL"):
        load_settings({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": bad})


def test_an_unreachable_database_names_the_variable_and_hides_the_password(tmp_path):
    from loopline.core.settings import SettingsError, load_settings
    from loopline.storage.database import open_database

    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path),
            "LOOPLINE_DATABASE_URL": "postgresql://loopline:s3cret@127.0.0.1:9/loopline",
        }
    )
    with pytest.raises(SettingsError, match="LOOPLINE_DATABASE_URL") as info:
        open_database(settings)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_a_schema_newer_than_the_code_is_refused(database):
    from sqlalchemy import text

    from loopline.storage.database import SchemaError

    with database.write() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="newer than this loopline"):
        database.check()
    with pytest.raises(SchemaError, match="upgrade loopline"):
        database.upgrade()
