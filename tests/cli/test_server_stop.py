"""`loopline server --stop` ends the foreground `loopline server` and its Prefect worker
too, not only the API (they ran on for over 70 s, logging failed connections)."""

import os
import subprocess
import time

import psutil
import pytest

from loopline.serving.server import free_port
from tests.conftest import VENV_BIN

pytestmark = pytest.mark.slow


def said(log) -> str:
    """The output as one line: the terminal wraps long lines (a long home path) anywhere."""
    return " ".join(log.read_text().split()) if log.exists() else ""


def test_server_stop_ends_the_foreground_server_and_its_worker(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.update(LOOPLINE_HOME=str(tmp_path / "home"), LOOPLINE_PREFECT_PORT=str(free_port()))
    log = tmp_path / "server.out"
    with open(log, "w") as out:
        foreground = subprocess.Popen(
            [str(VENV_BIN / "loopline"), "server"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        worker_log = tmp_path / "home" / "logs" / "prefect-worker.log"
        # Server up, worker started and polling: the state a server is in most of its life.
        while "Ctrl-C stops it" not in said(log) or "started!" not in said(worker_log):
            assert foreground.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        children = psutil.Process(foreground.pid).children(recursive=True)
        assert any("worker" in " ".join(c.cmdline()) for c in children), children
        stopped = subprocess.run(
            [str(VENV_BIN / "loopline"), "server", "--stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stopped.returncode == 0 and "stopped" in stopped.stderr, stopped.stderr
        # How soon is measured in benchmarks/README.md ("the floor on 2 cores").
        assert foreground.wait(timeout=20) == 0, log.read_text()
        assert "its worker stops with it" in said(log)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if foreground.poll() is None:
            foreground.terminate()
            foreground.wait(timeout=30)
