"""A pytest plugin: each test's CPU in the pytest worker itself (setup, call and teardown),
for the share of the suite that ``suite_profile`` can only call "pytest workers".

``suite_profile`` loads it with ``-p benchmarks.per_test_cpu`` and names the folder in
``LOOPLINE_TEST_CPU_DIR``; each worker appends one JSON line per test to its own file there.
Subprocesses a test starts are not in it: ``suite_profile`` counts them by kind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

FOLDER = "LOOPLINE_TEST_CPU_DIR"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    started = time.process_time()
    yield
    if folder := os.environ.get(FOLDER):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        line = {"test": item.nodeid, "cpu_s": round(time.process_time() - started, 2)}
        with open(Path(folder) / f"{worker}.jsonl", "a") as out:
            out.write(json.dumps(line) + "\n")


def heaviest(folder: Path, count: int = 15) -> list[tuple[float, str]]:
    """The ``count`` tests that used the most CPU in their worker, and how much."""
    rows = [
        json.loads(line)
        for file in sorted(folder.glob("*.jsonl"))
        for line in file.read_text().splitlines()
    ]
    return sorted(((row["cpu_s"], row["test"]) for row in rows), reverse=True)[:count]
