"""A real Prefect server on loopback, and the worker that executes scheduled runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

WORK_POOL = "loopline"


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def start_server(port: int, home: Path, log: Path) -> subprocess.Popen:
    """Start ``prefect server start`` on 127.0.0.1 with its SQLite database under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    with open(log, "ab") as out:
        return subprocess.Popen(
            [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(api_url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"Prefect server at {api_url} did not become healthy in {timeout:.0f} s")


def start_worker(api_url: str, log: Path) -> subprocess.Popen:
    """A process worker for the loopline pool: it runs each scheduled flow run."""
    ensure_work_pool()
    env = {**os.environ, "PREFECT_API_URL": api_url}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [_prefect(), "worker", "start", "--pool", WORK_POOL, "--type", "process"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ensure_work_pool() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
