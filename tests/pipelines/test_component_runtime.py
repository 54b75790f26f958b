"""The worker pool: a chain of tasks runs in one warm worker, tasks at once in as many;
output a worker prints between its tasks (Ray's log monitor after a training) goes to the
workers' log, never to the terminal."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from loopline.pipelines.local.component_runtime import ProcessPool, PythonCall

# A component that notes the worker's pid, then holds it for a moment.
NOTE_PID = """
def note_pid():
    import os, time
    with open(os.environ["PIDS"], "a") as pids:
        pids.write(f"{os.getpid()}\\n")
    time.sleep(float(os.environ["HOLD_S"]))
"""


def note_pid(tmp_path, n: int, hold_s: float) -> PythonCall:
    output = {"outputFile": str(tmp_path / f"executor-output-{n}.json")}
    env = {"PIDS": str(tmp_path / "pids"), "HOLD_S": str(hold_s)}
    return PythonCall(NOTE_PID, "note_pid", {"inputs": {}, "outputs": output}, env)


def pids(tmp_path) -> list[int]:
    return [int(line) for line in (tmp_path / "pids").read_text().split()]


def test_a_chain_runs_in_one_warm_worker_and_tasks_at_once_in_two(tmp_path):
    pool = ProcessPool(workers=2)
    try:
        pool.warm()
        for n in range(4):  # one after the other, as a pipeline's chain of tasks
            pool.run(note_pid(tmp_path, n, hold_s=0))
        chain = pids(tmp_path)
        assert len(chain) == 4 and len(set(chain)) == 1, chain  # imports paid once
        (tmp_path / "pids").unlink()
        with ThreadPoolExecutor(3) as callers:  # three at once, two workers
            list(callers.map(lambda n: pool.run(note_pid(tmp_path, n, hold_s=1)), range(3)))
        together = pids(tmp_path)
        assert len(together) == 3 and len(set(together)) == 2, together
        assert chain[0] in together  # the warm worker kept working
    finally:
        pool.shutdown()


def print_later() -> None:
    def late() -> None:
        time.sleep(0.3)
        print("LATE LINE FROM A FINISHED TASK", file=sys.stderr, flush=True)

    threading.Thread(target=late, daemon=True).start()


def test_a_workers_output_between_tasks_goes_to_its_log(tmp_path, capfd):
    log = tmp_path / "logs" / "component-workers.log"
    pool = ProcessPool(workers=1, between_tasks=log)
    try:
        pool._take().submit(print_later).result(timeout=60)
        deadline = time.monotonic() + 10
        while "LATE LINE" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the late line never reached the log"
            time.sleep(0.1)
    finally:
        pool.shutdown()
    captured = capfd.readouterr()
    assert "LATE LINE" not in captured.out + captured.err
