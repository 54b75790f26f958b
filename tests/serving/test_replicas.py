"""Scale-out on PostgreSQL: replicas share one database, a killed replica loses no
acknowledged answer, and windows by number never skip a row committed out of clock order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from loopline.core.settings import load_settings
from loopline.serving.server import free_port, start_server
from loopline.storage.database import open_database
from loopline.storage.predictions import Answer, PredictionLog
from loopline.storage.tables import predictions
from tests.serving.load import Load

pytestmark = pytest.mark.xdist_group("served")  # shares the session's server


@pytest.mark.slow
def test_two_replicas_one_database_and_a_kill_9_lose_no_acknowledged_answer(
    served, postgres_url, tmp_path
):
    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path / "home"),
            "LOOPLINE_DATABASE_URL": postgres_url,
            "LOOPLINE_TRACKING_URI": served.settings.tracking_uri,
        }
    )
    open_database(settings, migrate=True).close()  # `loopline db upgrade`, once
    replicas = [
        start_server(settings, port=free_port(), log_path=tmp_path / f"serve-{n}.log")
        for n in range(2)
    ]
    load = Load([replica.url for replica in replicas])
    try:
        for replica in replicas:
            replica.wait_ready()
        load.start()
        time.sleep(3)
        replicas[0].kill()  # kill -9 every process of one replica, mid-load
        time.sleep(2)
        load.stop()
    finally:
        for replica in replicas:
            replica.stop()
    answered = load.answered
    assert len(answered) > 50, "the load did not get going"
    database = open_database(settings)
    logged = PredictionLog(database).read_window()
    database.close()
    per_request = logged.groupby("request_id")["item"].count()
    missing = [r for r in answered if per_request.get(r, 0) != 3]
    assert not missing, f"{len(missing)} acknowledged answers are not (wholly) in the log"
    assert logged["seq"].tolist() == list(range(1, len(logged) + 1))  # once each, no gap


def test_rows_committed_out_of_clock_order_are_each_judged_in_exactly_one_window(
    postgres_url, tmp_path
):
    """Replica A stamps its rows with a clock 10 s behind and commits slowly; replica B
    commits meanwhile. A monitor reading windows by number sees every row exactly once."""
    settings = load_settings(
        {"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_DATABASE_URL": postgres_url}
    )
    replica_a, replica_b, monitor = (open_database(settings, migrate=True) for _ in range(3))
    log_b, reader = PredictionLog(replica_b), PredictionLog(monitor)
    holding, release = threading.Event(), threading.Event()

    def slow_replica() -> None:
        with replica_a.write() as connection:
            first = replica_a.take_numbers(connection.connection.cursor(), "predictions", 5)
            connection.execute(
                predictions.insert(),
                [
                    {
                        "seq": first + i,
                        "request_id": f"a{i}",
                        "item": 0,
                        "ts": time.time() - 10,
                        "model_version": "1",
                        "inputs": b"\0" * 4,
                        "label": "0",
                        "probabilities": b"\0" * 8,
                    }
                    for i in range(5)
                ],
            )
            holding.set()
            release.wait(10)

    def fast_replica() -> None:
        for i in range(5):
            log_b.append(Answer(f"b{i}", "1", np.zeros((1, 1), np.float32), ["0"], np.ones((1, 1))))

    seen: list[int] = []
    after = 0

    def judge() -> None:  # one monitoring window: from the last one to the newest number
        nonlocal after
        upto = reader.last_seq()
        seen.extend(reader.read_window(after, upto)["seq"].tolist())
        after = upto

    a = threading.Thread(target=slow_replica)
    a.start()
    holding.wait(10)
    b = threading.Thread(target=fast_replica)
    b.start()
    for _ in range(5):  # windows judged while A's rows are uncommitted and B waits
        judge()
        time.sleep(0.1)
    release.set()
    a.join()
    b.join()
    judge()
    assert sorted(seen) == seen == list(range(1, 11))  # all ten, each in one window
    for database in (replica_a, replica_b, monitor):
        database.close()
