"""One Prefect server per LOOPLINE_HOME, shared by every loopline process that uses it.

A temporary server per command cost 6-13 s each time, and several of them on one SQLite
file locked each other out. Instead, the first command that needs Prefect starts the
home's server, detached, and later commands reuse it: a cached re-run then pays no
start-up. The server records itself in ``PREFECT_HOME/server.json``; a file lock makes
concurrent first commands start exactly one. Each command holds a lease while it uses the
server (a file named after its pid), and the supervisor stops the server once no live
process has held one for ``LOOPLINE_PREFECT_IDLE`` (10 minutes). ``loopline server``
holds a lease for as long as it runs; ``loopline server --stop`` stops the server now.

``PREFECT_API_URL``, when exported, names the server to use instead (a team's server, or
Prefect Cloud); then nothing is started here.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from loopline.core import engine_env, processes
from loopline.core.settings import Settings

WORK_POOL = "loopline"
STATE = "server.json"
LEASES = "leases"
# A first start creates and migrates the database: over 20 s on a loaded 2-core machine.
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class HomeServer:
    pid: int  # the supervisor's
    port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def running(settings: Settings) -> HomeServer | None:
    """The home's server if it is up and answering; never starts or writes anything."""
    try:
        state = json.loads((settings.prefect_home / STATE).read_text())
    except (OSError, ValueError):
        return None
    server = HomeServer(int(state["pid"]), int(state["port"]))
    if processes.alive(server.pid) and healthy(server.api_url):
        return server
    return None


def ensure(settings: Settings) -> HomeServer:
    """The home's server, started (and waited for) when none is up."""
    folder = settings.prefect_home
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / "server.lock"):
        if (server := running(settings)) is not None:
            return server
        (folder / STATE).unlink(missing_ok=True)
        engine_env.prepare_logs(settings)
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loopline.pipelines.local.prefect_server",
                "--home",
                str(settings.home),
                "--port",
                str(_port(settings.prefect.port)),
                "--idle",
                str(settings.prefect.idle_s),
            ],
            env={**os.environ, **engine_env.engine_environment(settings), "PREFECT_API_URL": ""},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(settings.logs / "prefect-server.log", "ab"),  # noqa: SIM115 - the child's
            start_new_session=True,  # outlives this command; it stops itself when idle
        )
        return _wait_started(settings, supervisor)


def _wait_started(settings: Settings, supervisor: subprocess.Popen) -> HomeServer:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            raise RuntimeError(
                f"the Prefect server for {settings.home} did not start; "
                f"see {settings.logs / 'prefect-server.log'}"
            )
        if (server := running(settings)) is not None:
            return server
        time.sleep(0.2)
    processes.stop_tree(supervisor.pid)
    raise TimeoutError(
        f"the Prefect server for {settings.home} did not answer within {START_TIMEOUT_S:.0f} s; "
        f"see {settings.logs / 'prefect-server.log'}"
    )


def stop(settings: Settings, timeout: float = 30) -> bool:
    """Stop the home's server; True if one was running."""
    server = running(settings)
    if server is None:
        return False
    os.kill(server.pid, signal.SIGTERM)  # the supervisor stops its server, then exits
    deadline = time.monotonic() + timeout
    while processes.alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if processes.alive(server.pid):
        processes.stop_tree(server.pid, grace=0)
    return True


@contextlib.contextmanager
def lease(settings: Settings) -> Iterator[None]:
    """Keep the home's server up while this process uses it."""
    folder = settings.prefect_home / LEASES
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / str(os.getpid())
    mine.touch()
    try:
        yield
    finally:
        mine.unlink(missing_ok=True)
        (folder / ".last").touch()  # the idle clock starts now


def other_leases(settings: Settings) -> list[int]:
    """Live processes other than this one that hold a lease on the home's server."""
    return [pid for pid in _live_leases(settings.prefect_home / LEASES) if pid != os.getpid()]


@contextlib.contextmanager
def api(settings: Settings) -> Iterator[str]:
    """The Prefect API this process should use, held for the duration of the block.

    An exported ``PREFECT_API_URL`` wins; otherwise the home's server is started or
    reused, and ``PREFECT_API_URL`` is exported to this process and its children.
    """
    if exported := os.environ.get("PREFECT_API_URL"):
        yield exported
        return
    server = ensure(settings)
    with lease(settings):
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            yield server.api_url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _port(wanted: int) -> int:
    """``wanted`` (``LOOPLINE_PREFECT_PORT``, 4200) when free, else any free port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another command starts the server
        yield


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
            preexec_fn=processes.die_with_parent,
        )


def ensure_work_pool() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))


# -- the supervisor: `python -m loopline.pipelines.local.prefect_server` -------------------------------


def _supervise(home: Path, port: int, idle: float) -> int:
    from loopline.core.settings import load_settings

    settings = load_settings({**os.environ, "LOOPLINE_HOME": str(home)})
    folder = settings.prefect_home
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server = subprocess.Popen(
        [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=processes.die_with_parent,  # a killed supervisor takes its server along
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    state = HomeServer(os.getpid(), port)
    (folder / STATE).write_text(json.dumps(asdict(state)))
    last_active = time.time()
    try:
        while not stopping and server.poll() is None:
            time.sleep(1)
            if _live_leases(folder / LEASES):
                last_active = time.time()
            last_active = max(last_active, _mtime(folder / LEASES / ".last"))
            if time.time() - last_active > idle > 0:
                print(
                    f"no loopline command used the server for {idle:.0f} s; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                break
    finally:
        with contextlib.suppress(OSError):
            if json.loads((folder / STATE).read_text())["pid"] == os.getpid():
                (folder / STATE).unlink()
        processes.stop_tree(server.pid)
    return 0


def _live_leases(folder: Path) -> list[int]:
    live = []
    for path in folder.glob("[0-9]*"):
        if processes.alive(int(path.name)):
            live.append(int(path.name))
        else:
            path.unlink(missing_ok=True)  # its command was killed
    return live


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Supervise the Prefect server of one home.")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=float, required=True)
    args = parser.parse_args(argv)
    return _supervise(args.home, args.port, args.idle)


if __name__ == "__main__":
    sys.exit(main())
