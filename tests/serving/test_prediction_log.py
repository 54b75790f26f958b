"""The prediction log, on SQLite and PostgreSQL: exactly once, durable through kill -9,
numbered in commit order, and a reused request id never logged twice."""

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from loopline.storage.predictions import Answer, PredictionLog


def answer(request_id: str, rows: int = 1, version: str = "1", value: float = 0.1) -> Answer:
    inputs = np.full((rows, 2), value, dtype=np.float32)
    return Answer(request_id, version, inputs, ["7"] * rows, np.tile([0.1, 0.9], (rows, 1)))


def test_concurrent_writers_each_record_stored_once_and_numbered_without_gaps(database):
    log = PredictionLog(database)

    def client(n: int) -> None:
        for i in range(25):
            assert log.append(answer(f"c{n}-r{i}", rows=3)).outcome == "new"

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.count() == 8 * 25 * 3
    window = log.read_window()
    assert window["seq"].tolist() == list(range(1, 8 * 25 * 3 + 1))  # a prefix, in order
    log.close()


def test_a_reused_id_replays_the_same_inputs_and_refuses_others(database):
    log = PredictionLog(database)
    assert log.append(answer("r1", rows=2)).outcome == "new"
    again = log.append(answer("r1", rows=2))
    assert again.outcome == "replay" and again.stored.labels == ["7", "7"]
    assert np.array_equal(again.stored.probabilities, np.tile([0.1, 0.9], (2, 1)))
    assert log.append(answer("r1", rows=2, value=0.5)).outcome == "conflict"
    assert log.append(answer("r1", rows=3)).outcome == "conflict"  # more items: other inputs
    assert log.count() == 2  # nothing of the retries or conflicts was logged
    # Racing writers with one id: exactly one is logged; the others replay or conflict.
    values = [i % 2 for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda v: log.append(answer("race", value=v)).outcome, values))
    assert outcomes.count("new") == 1 and log.count() == 3
    kept = log.lookup("race").inputs[0][0]
    for value, outcome in zip(values, outcomes, strict=True):
        if outcome != "new":
            assert outcome == ("replay" if value == kept else "conflict")
    log.close()


def test_one_batch_with_a_reused_id_logs_the_first_and_judges_the_rest_against_it(database):
    """The writer claims a whole batch in one statement; an id twice in one batch (a
    client retrying before its first answer came back) is still logged once."""
    log = PredictionLog(database)
    batch = [
        answer("dup", rows=2),
        answer("dup", rows=2),
        answer("dup", value=0.7),
        answer("solo"),
        answer("dup", rows=2),
    ]
    outcomes = log._write(batch)  # what the writer thread does with one gathered batch
    assert [o.outcome for o in outcomes] == ["new", "replay", "conflict", "new", "replay"]
    assert outcomes[1].stored is batch[0]
    assert log.count() == 3 and log.last_seq() == 3
    assert [o.outcome for o in log._write([answer("dup", rows=2), answer("new")])] == [
        "replay",
        "new",
    ]  # a later batch reads the stored answer back
    log.close()


def test_the_largest_batch_fits_in_one_claim_statement(database):
    """The writer gathers up to 4,096 rows: as many one-row requests. On SQLite they are
    five values each in one INSERT, under its limit on bound values; on PostgreSQL, arrays
    in one statement."""
    log = PredictionLog(database)
    batch = [answer(f"b{i}") for i in range(log.max_batch_rows)]
    assert {o.outcome for o in log._write(batch)} == {"new"}
    assert log.count() == log.max_batch_rows and log.last_seq() == log.max_batch_rows
    log.close()


def test_the_writer_reconnects_when_postgresql_drops_its_connection(postgres_url, tmp_path):
    """The writer keeps one connection; a server restart or an idle timeout ends it. The
    next batch opens a new one: no client hears of it, and nothing is logged twice."""
    from sqlalchemy import text

    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database

    settings = load_settings(
        {"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": postgres_url}
    )
    database, admin = open_database(settings, migrate=True), open_database(settings)
    log = PredictionLog(database)
    assert log.append(answer("before")).outcome == "new"
    with admin.write() as connection:
        killed = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert killed >= 1
    assert log.append(answer("after")).outcome == "new"
    assert log.append(answer("before")).outcome == "replay"
    assert log.count() == 2
    log.close()
    admin.close()


def test_the_writers_connection_never_goes_back_to_the_pool(postgres_url, tmp_path):
    """On PostgreSQL the writer's connection commits each statement by itself. In the pool
    it would commit what another caller rolls back: closing the log closes it."""
    from sqlalchemy import text

    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database

    settings = load_settings(
        {"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": postgres_url}
    )
    database = open_database(settings, migrate=True)
    log = PredictionLog(database)
    assert log.append(answer("one")).outcome == "new"
    log.close()
    pooled = database.engine.pool.checkedin()
    connections = [database.engine.connect() for _ in range(max(pooled, 1))]  # all of them
    for connection in connections:
        with connection.begin() as transaction:
            connection.execute(text("UPDATE counters SET value = value + 100"))
            transaction.rollback()
        connection.close()
    log = PredictionLog(database)
    assert log.append(answer("two")).outcome == "new"
    assert log.read_window()["seq"].tolist() == [1, 2]  # no rolled-back update took effect
    log.close()
    database.close()


def test_without_its_counter_row_a_batch_fails_whole(postgres_url, tmp_path):
    """PostgreSQL's one-statement write numbers the rows from the counter row. Were the
    row gone, the statement fails as a whole: no request id is claimed without its rows,
    and the writers hear of it rather than being told their answers are stored."""
    import pytest
    from sqlalchemy import text

    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database

    settings = load_settings(
        {"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": postgres_url}
    )
    database = open_database(settings, migrate=True)
    log = PredictionLog(database)
    assert log.append(answer("first")).outcome == "new"
    with database.write() as connection:
        connection.execute(text("DELETE FROM counters"))
    with pytest.raises(Exception, match="seq"):
        log.append(answer("second"))
    with database.read() as connection:
        assert connection.execute(text("SELECT request_id FROM requests")).scalars().all() == [
            "first"
        ]
    log.close()
    database.close()


def test_async_writers_are_woken_per_commit_with_their_own_outcomes(database):
    """The service awaits ``record`` on its event loop: many requests, one wake-up per
    commit; each hears its own outcome, and one that gives up does not disturb the rest."""
    import asyncio

    log = PredictionLog(database)

    async def main():
        tasks = [
            asyncio.create_task(log.record(answer(f"a{i % 40}", value=i // 40))) for i in range(80)
        ]
        await asyncio.sleep(0)  # every request is queued
        tasks[5].cancel()  # gives up while its commit is under way
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert isinstance(outcomes[5], asyncio.CancelledError)
    kinds = [o.outcome for i, o in enumerate(outcomes) if i != 5]
    assert kinds.count("new") == 39 and kinds.count("conflict") == 40  # the second of each id
    assert log.count() == 40  # the request that gave up is logged all the same
    log.close()


def test_read_window_by_number_and_model_version_and_sample(database):
    log = PredictionLog(database)
    for i in range(10):
        log.append(answer(f"r{i}", version="1" if i < 5 else "2", value=i))
    window = log.read_window(after=3, upto=7)
    assert window["request_id"].tolist() == ["r3", "r4", "r5", "r6"]
    assert window["inputs"].iloc[0].tolist() == [3.0, 3.0]
    assert window["probabilities"].iloc[0].tolist() == [0.1, 0.9]
    assert log.read_window(model_version="2")["request_id"].tolist() == [
        f"r{i}" for i in range(5, 10)
    ]
    assert log.count_window(0, 10, model_version="1") == 5
    assert log.last_seq() == 10
    sample = log.sample_window(0, 10, 4, seed=1)["seq"].tolist()
    assert len(set(sample)) == 4 and sample == sorted(sample) and set(sample) <= set(range(1, 11))
    assert log.sample_window(0, 10, 4, seed=1)["seq"].tolist() == sample  # one window, one draw
    drawn = log.sample_window(0, 10, 6, model_version="2", seed=3)
    assert set(drawn["model_version"]) == {"2"} and len(drawn) <= 6
    assert log.sample_window(2, 6, 10)["seq"].tolist() == [3, 4, 5, 6]  # smaller: read whole
    log.close()


def test_a_sample_is_drawn_uniformly_over_the_whole_window(database):
    """Not the first rows, not every n-th of a prefix: each half of a long window gives
    about half the sample, and every part of it is reached."""
    log = PredictionLog(database)
    for start in range(0, 3000, 500):
        log.append(answer(f"block{start}", rows=500))
    seqs = np.array(log.sample_window(0, 3000, 1200, seed=7)["seq"].tolist())
    assert len(seqs) == 1200 and len(set(seqs)) == 1200  # in chunks of 1,000: none lost
    assert 0.45 < (seqs > 1500).mean() < 0.55
    assert np.histogram(seqs, bins=6, range=(1, 3000))[0].min() > 150  # 200 expected each
    log.close()


def test_close_commits_what_was_queued(database):
    log = PredictionLog(database)
    pending = [log.submit(answer(f"r{i}")) for i in range(20)]
    log.close()
    assert all(f.done() for f in pending)
    assert PredictionLog(database).count() == 20


WRITER = """
import sys
import numpy as np
from loopline.storage.database import open_database
from loopline.core.settings import load_settings
from loopline.storage.predictions import Answer, PredictionLog
log = PredictionLog(open_database(load_settings(), migrate=True))
i = 0
while True:
    log.append(Answer(f"r{i}", "1", np.zeros((1, 1), np.float32), ["0"], np.ones((1, 1))))
    print(f"r{i}", flush=True)  # acknowledged only after append returned
    i += 1
"""


def test_acknowledged_predictions_survive_kill_9(database, database_url, tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOOPLINE_HOME": str(tmp_path),
            "LOOPLINE_DATABASE_URL": database_url,
        },
    )
    acknowledged = [writer.stdout.readline().strip() for _ in range(200)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    stored = set(PredictionLog(database).read_window()["request_id"])
    assert set(acknowledged) <= stored


def test_accuracy_is_counted_in_the_database_over_the_window(database):
    """The monitor's quality check: labelled rows of one model version within a window,
    and how many the model got right, without reading the rows out."""
    from loopline.storage.feedback import FeedbackStore, Label

    log, store = PredictionLog(database), FeedbackStore(database)
    for i in range(10):  # answered "7"; seq 1-10, versions 1 (1-5) and 2 (6-10)
        log.append(answer(f"r{i}", version="1" if i < 5 else "2"))
    truth = {0: "7", 1: "3", 2: "7", 6: "7", 7: "1", 8: "7", 9: "7"}  # r3, r4, r5 unlabelled
    stored = store.attach([Label(f"r{i}", 0, label) for i, label in truth.items()])
    assert stored["stored"] == 7
    assert store.accuracy() == (7, 5)
    assert store.accuracy(model_version="1") == (3, 2)  # r0, r1, r2
    assert store.accuracy(6, 10, model_version="2") == (4, 3)  # seq 7-10: r6-r9
    assert store.accuracy(7, 10, model_version="2") == (3, 2)  # seq 8-10: r6 is out
    assert store.accuracy(10) == (0, 0)
    # the same counts as reading every labelled row out
    rows = store.labelled()
    assert store.accuracy() == (len(rows), int((rows.prediction == rows.label).sum()))
    log.close()
