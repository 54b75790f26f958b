"""A pytest plugin: when each test ran, in which worker, and the CPU it used in that worker
(setup, call and teardown), so that ``suite_profile`` can charge each test with the
subprocesses it started too (the servers, pipeline tasks and CLI commands that
``--durations`` charges to it without saying what they cost).

``suite_profile`` loads it with ``-p benchmarks.per_test_cpu`` and names the folder in
``LOOPLINE_TEST_CPU_DIR``; each worker appends one JSON line per test to its own file there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

FOLDER = "LOOPLINE_TEST_CPU_DIR"


def since_boot() -> float:
    """Seconds since boot: the clock /proc/PID/stat's start times count in."""
    return float(Path("/proc/uptime").read_text().split()[0])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    started, began = time.process_time(), since_boot()
    yield
    if folder := os.environ.get(FOLDER):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        line = {
            "test": item.nodeid,
            "cpu_s": round(time.process_time() - started, 2),
            "worker": worker,
            "pid": os.getpid(),
            "window": [began, since_boot()],
        }
        with open(Path(folder) / f"{worker}.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")


def tests(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for file in sorted(folder.glob("*.jsonl"))
        for line in file.read_text().splitlines()
    ]


def heaviest(folder: Path, count: int = 15) -> list[tuple[float, str]]:
    """The ``count`` tests that used the most CPU in their worker, and how much."""
    return sorted(((row["cpu_s"], row["test"]) for row in tests(folder)), reverse=True)[:count]


def charged(
    rows: list[dict], started: list[tuple[float, float, str, str]]
) -> dict[str, dict[str, float]]:
    """Each test's CPU by kind of process: its worker's own, under "the test itself", and
    its subprocesses'. ``started`` holds each subprocess's (CPU seconds, start in seconds
    since boot, the pytest worker it came from, its kind); it goes to the test that worker
    was running then (a session fixture's server: to the first test that asked for it)."""
    by_worker: dict[str, list[dict]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append(row)
    total = {row["test"]: {"the test itself": row["cpu_s"]} for row in rows}
    for cpu, start, worker, kind in started:
        for row in by_worker.get(worker, ()):
            if row["window"][0] <= start <= row["window"][1]:
                kinds = total[row["test"]]
                kinds[kind] = kinds.get(kind, 0.0) + cpu
                break
    return total
