"""The worker pool: a chain of tasks runs in one warm worker, tasks at once in as many;
output a worker prints between its tasks (Ray's log monitor after a training) goes to the
workers' log, never to the terminal."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from loopline.pipelines.local.component_runtime import ProcessPool, PythonCall

# A component that notes the worker's pid, then holds it for a moment.
NOTE_PID = """
def note_pid():
    import os, time
    with open(os.environ["PIDS"], "a") as pids:
        pids.write(f"{os.environ['TASK']} {os.getpid()}\\n")
    time.sleep(float(os.environ["HOLD_S"]))
"""


def note_pid(tmp_path, n: int, hold_s: float) -> PythonCall:
    output = {"outputFile": str(tmp_path / f"executor-output-{n}.json")}
    env = {"PIDS": str(tmp_path / "pids"), "HOLD_S": str(hold_s), "TASK": str(n)}
    return PythonCall(NOTE_PID, "note_pid", {"inputs": {}, "outputs": output}, env)


def pids(tmp_path) -> list[int]:
    """The worker pid of each task that started, in order."""
    return [int(line.split()[1]) for line in (tmp_path / "pids").read_text().splitlines()]


def _pid_of_task(tmp_path, task: int) -> int:
    lines = (tmp_path / "pids").read_text().splitlines()
    return next(int(pid) for name, pid in map(str.split, lines) if name == str(task))


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


# A component that leaves a thread printing after the task has ended.
PRINT_LATER = """
def print_later():
    import sys, threading, time

    def late():
        time.sleep(0.3)
        print("LATE LINE FROM A FINISHED TASK", file=sys.stderr, flush=True)

    threading.Thread(target=late, daemon=True).start()
"""


def test_a_workers_output_between_tasks_goes_to_its_log(tmp_path, capfd):
    log = tmp_path / "logs" / "component-workers.log"
    pool = ProcessPool(workers=1, between_tasks=log)
    output = {"outputFile": str(tmp_path / "executor-output.json")}
    try:
        pool.run(PythonCall(PRINT_LATER, "print_later", {"inputs": {}, "outputs": output}, {}))
        deadline = time.monotonic() + 10
        while "LATE LINE" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the late line never reached the log"
            time.sleep(0.1)
    finally:
        pool.shutdown()
    captured = capfd.readouterr()
    assert "LATE LINE" not in captured.out + captured.err


def test_a_worker_killed_fails_its_own_task_only_and_an_idle_ones_death_fails_none(tmp_path):
    pool = ProcessPool(workers=2)
    try:
        pool.run(note_pid(tmp_path, 0, hold_s=0))
        os.kill(pids(tmp_path)[0], signal.SIGKILL)  # idle: the next task gets a new worker
        time.sleep(0.5)
        pool.run(note_pid(tmp_path, 1, hold_s=0))
        (tmp_path / "pids").unlink()

        def run(n: int) -> str:
            try:
                pool.run(note_pid(tmp_path, n, hold_s=3 if n == 2 else 1.5))
                return "ok"
            except RuntimeError as error:
                return str(error)

        with ThreadPoolExecutor(2) as callers:
            outcomes = [callers.submit(run, n) for n in (2, 3)]
            deadline = time.monotonic() + 30
            while len(pids(tmp_path) if (tmp_path / "pids").exists() else []) < 2:
                assert time.monotonic() < deadline, "the two tasks never both started"
                time.sleep(0.05)
            os.kill(_pid_of_task(tmp_path, 2), signal.SIGKILL)
            results = [outcome.result(timeout=60) for outcome in outcomes]
        assert "worker process running this component died" in results[0], results
        assert results[1] == "ok", results  # the other worker's task was not touched
        pool.run(note_pid(tmp_path, 4, hold_s=0))  # and the pool goes on
        failing = dataclasses.replace(note_pid(tmp_path, 5, hold_s=0), function="missing")
        for _ in range(3):  # a failed component keeps its worker: no more than two start
            with pytest.raises(AttributeError):
                pool.run(failing)
        assert len(pool._all) <= 2 and len(set(pids(tmp_path))) <= 3
    finally:
        pool.shutdown()
