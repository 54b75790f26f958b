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


class Postgres:
    """One throw-away server on a port of its own, which a test may stop and start again
    (an outage) on the same data."""

    def __init__(self, *, durable: bool = False):
        # Outside pytest's private (0700, root's) folders: the postgres user must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="loopline-postgres-"))
        self.data, self.port, self.durable = self.folder / "data", free_port(), durable
        self.server: subprocess.Popen | None = None
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "loopline", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://loopline@127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.folder / "postgres.log", "ab") as log:
            self.server = subprocess.Popen(
                _as_postgres(
                    [
                        tool("postgres"),
                        "-D",
                        str(self.data),
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.folder),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        f"fsync={'on' if self.durable else 'off'}",
                        "-c",
                        "max_connections=200",
                    ]
                ),
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while (
            subprocess.run(
                [tool("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            ).returncode
            != 0
        ):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.folder / "postgres.log").read_text()[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        if self.server is not None:
            processes.stop_tree(self.server.pid, grace=20, sig=signal.SIGINT)  # "fast" shutdown
            self.server = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[str]:
    """Start a throw-away server; yield its base URL (user `loopline`, no password).
    Tests run it with ``fsync=off``; ``durable`` keeps production's ``fsync=on``, for
    benchmarks of the commit path."""
    server = Postgres(durable=durable)
    try:
        server.start()
        yield server.url
    finally:
        server.remove()


def new_database(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"
