"""`loopline monitor --every` outlives a PostgreSQL outage: a real server stopped
mid-run, then started again. The monitor logs each failed pass, backs off, and resumes
by itself; SIGTERM still stops it with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.ml.test_registration import frame, register, rows, save
from tests.postgres import Postgres, new_database


def test_the_monitor_survives_the_database_going_away_and_resumes(home, tmp_path):
    from loopline.core.settings import load_settings

    server = Postgres()
    try:
        server.start()
        url = new_database(server.url, "outage")
        env = {**os.environ, "LOOPLINE_DATABASE_URL": url, "LOOPLINE_MODEL_NAME": "m"}
        settings = load_settings({"LOOPLINE_HOME": str(home), "LOOPLINE_MODEL_NAME": "m"})
        evaluation = rows(tmp_path, "eval", frame(300, 1))
        train = rows(tmp_path, "train", frame(600, 0))
        register(settings, tmp_path, save(tmp_path / "v1", frame(600, 0)), evaluation, train)
        monitor = subprocess.Popen(
            [str(Path(sys.executable).parent / "loopline"), "monitor", "--every", "1s"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        said: list[str] = []
        reading = threading.Thread(target=lambda: said.extend(monitor.stdout), daemon=True)
        reading.start()
        try:
            _until(lambda: any("waiting" in line for line in said), 90, said)
            server.stop()
            _until(lambda: any("monitoring pass failed" in line for line in said), 30, said)
            # another failed pass, the wait doubled: 2 s after the first, 4 s after this one
            _until(lambda: any("retrying in 4 s" in line for line in said), 30, said)
            assert monitor.poll() is None, "".join(said)
            server.start()
            _until(lambda: any("monitoring resumed" in line for line in said), 60, said)
            assert monitor.poll() is None
        finally:
            monitor.send_signal(signal.SIGTERM)
            code = monitor.wait(timeout=30)
            reading.join(timeout=5)
        text = "".join(said)
        assert code == 0, text
        assert "Traceback" not in text
        failed = text.index("monitoring pass failed")
        assert "retrying in 2 s" in text[failed:]
        assert "waiting" in text[text.index("monitoring resumed") - 2000 :]
    finally:
        server.remove()


def _until(condition, timeout: float, said: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "".join(said)[-3000:]
        time.sleep(0.2)
