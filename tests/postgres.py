"""A real PostgreSQL server on loopback, from Debian's `postgresql` package, for the tests
and the benchmarks. Its server programs live off PATH, under /usr/lib/postgresql/N/bin,
and refuse to run as root: as root they run as the postgres user."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loopline.core import processes
from loopline.serving.server import free_port


class PostgresMissing(RuntimeError):
    """PostgreSQL's server programs are not installed."""


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise PostgresMissing(
            f"PostgreSQL's {name} is missing; `make test` installs it (apt-get install postgresql)"
        )
    return str(found)


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[str]:
    """Start a throw-away server; yield its base URL (user `loopline`, no password).
    Tests run it with ``fsync=off``; ``durable`` keeps production's ``fsync=on``, for
    benchmarks of the commit path."""
    # Outside pytest's private (0700, root's) folders: the postgres user must reach it.
    folder = Path(tempfile.mkdtemp(prefix="loopline-postgres-"))
    data, port = folder / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [tool("initdb"), "-D", str(data), "-A", "trust", "-U", "loopline", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    with open(folder / "postgres.log", "wb") as log:
        server = subprocess.Popen(
            _as_postgres(
                [
                    tool("postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(folder),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"fsync={'on' if durable else 'off'}",
                    "-c",
                    "max_connections=200",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while (
            subprocess.run(
                [tool("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((folder / "postgres.log").read_text()[-2000:])
            time.sleep(0.2)
        yield f"postgresql://loopline@127.0.0.1:{port}"
    finally:
        processes.stop_tree(server.pid, grace=20, sig=signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(folder, ignore_errors=True)


def new_database(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"
