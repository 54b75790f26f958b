"""The worker pool: output a worker prints between its tasks (Ray's log monitor after a
training) goes to the workers' log, never to the terminal."""

from __future__ import annotations

import sys
import threading
import time

from loopline.pipelines.local.component_runtime import ProcessPool


def print_later() -> None:
    def late() -> None:
        time.sleep(0.3)
        print("LATE LINE FROM A FINISHED TASK", file=sys.stderr, flush=True)

    threading.Thread(target=late, daemon=True).start()


def test_a_workers_output_between_tasks_goes_to_its_log(tmp_path, capfd):
    log = tmp_path / "logs" / "component-workers.log"
    pool = ProcessPool(workers=1, between_tasks=log)
    try:
        pool._executor().submit(print_later).result(timeout=60)
        deadline = time.monotonic() + 10
        while "LATE LINE" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the late line never reached the log"
            time.sleep(0.1)
    finally:
        pool.shutdown()
    captured = capfd.readouterr()
    assert "LATE LINE" not in captured.out + captured.err
