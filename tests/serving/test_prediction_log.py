"""The prediction log: exactly once, durable through kill -9, batched, readable by window."""

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

from serving.prediction_log import Prediction, PredictionLog


def prediction(request_id: str, item: int = 0, version: str = "1", ts: float | None = None):
    return Prediction(request_id, item, version, [0.1, 0.2], "7", [0.1, 0.9], ts)


def test_concurrent_writers_each_record_stored_once(tmp_path):
    log = PredictionLog(tmp_path / "p.db")

    def client(n: int) -> None:
        for i in range(50):
            log.append([prediction(f"c{n}-r{i}", item) for item in range(3)])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.append([prediction("c0-r0", 0)])  # a retried write of a stored prediction
    assert log.count() == 8 * 50 * 3
    log.close()


def test_read_window_by_time_and_model_version(tmp_path):
    log = PredictionLog(tmp_path / "p.db")
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    log.append([prediction(f"r{i}", version="1" if i < 5 else "2", ts=base + i) for i in range(10)])
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=3)
    window = log.read_window(start, start + timedelta(seconds=4))
    assert window["request_id"].tolist() == ["r3", "r4", "r5", "r6"]
    assert window["inputs"].iloc[0] == [0.1, 0.2] and window["probabilities"].iloc[0] == [0.1, 0.9]
    assert log.read_window(model_version="2")["request_id"].tolist() == [
        f"r{i}" for i in range(5, 10)
    ]
    log.close()


def test_close_commits_what_was_queued(tmp_path):
    log = PredictionLog(tmp_path / "p.db", max_wait_s=0.5)
    pending = [log.submit([prediction(f"r{i}")]) for i in range(20)]
    log.close()
    assert all(f.done() for f in pending)
    assert PredictionLog(tmp_path / "p.db").count() == 20


WRITER = """
import sys
from serving.prediction_log import Prediction, PredictionLog
log = PredictionLog(sys.argv[1])
i = 0
while True:
    log.append([Prediction(f"r{i}", 0, "1", [i], "0", [1.0])])
    print(f"r{i}", flush=True)  # acknowledged only after append returned
    i += 1
"""


def test_acknowledged_predictions_survive_kill_9(tmp_path):
    path = tmp_path / "p.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    acknowledged = [writer.stdout.readline().strip() for _ in range(200)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    stored = set(PredictionLog(path).read_window()["request_id"])
    assert set(acknowledged) <= stored
