"""One Prefect server per LOOPLINE_HOME, shared by every loopline process that uses it.

A temporary server per command cost 6-13 s each time, and several of them on one SQLite
file locked each other out. Instead, the first command that needs Prefect starts the
home's server, detached (``prefect_supervisor``), and later commands reuse it: a cached
re-run then pays no start-up. The server records itself in ``PREFECT_HOME/server.json``
(the supervisor's pid, the port it bound and a token); a file lock makes concurrent first
commands of one home start exactly one. Homes never share a server: each binds its own
port, and a client uses a server only if it answers with its home's token
(:func:`running`); a server of another home is an error, never used.

Each command holds a lease while it uses the server (a file named after its pid), taken
before the server starts; the supervisor stops the server once no live process has held
one for ``LOOPLINE_PREFECT_IDLE`` (10 minutes). ``loopline server`` holds a lease for as
long as it runs; ``loopline server --stop`` stops the server now.

``PREFECT_API_URL``, when exported, names the server to use instead (a team's server, or
Prefect Cloud); then nothing is started or checked here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from loopline.core import engine_env, processes
from loopline.core.errors import LooplineError
from loopline.core.settings import Settings

WORK_POOL = "loopline"
STATE = "server.json"
LEASES = "leases"
IDENTITY_PATH = "/loopline/home"  # the server's answer: its home and token
SUPERVISOR = "loopline.pipelines.local.prefect_supervisor"
EARLIER_SUPERVISOR = "loopline.pipelines.local.prefect_server"  # 0.1.x's, which had no token
# A first start creates and migrates the database: over 20 s on a loaded 2-core machine,
# minutes when several homes start at once.
START_TIMEOUT_S = 300.0


class PrefectServerError(LooplineError, RuntimeError):
    """The home's Prefect server did not start, or the one recorded is not this home's."""


@dataclass(frozen=True)
class HomeServer:
    pid: int  # the supervisor's
    port: int
    token: str = ""  # the server answers IDENTITY_PATH with it

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _prefect() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def recorded(settings: Settings) -> HomeServer | None:
    """The server ``server.json`` names, whether or not it runs."""
    try:
        state = json.loads((settings.prefect_home / STATE).read_text())
        return HomeServer(int(state["pid"]), int(state["port"]), str(state.get("token", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(settings: Settings) -> HomeServer | None:
    """The home's server if it is up and answering; never starts or writes anything.

    PrefectServerError when the port ``server.json`` names answers as another server."""
    server = recorded(settings)
    if server is None or not processes.alive(server.pid):
        return None
    answer = identity(server)
    if answer is None:
        return None
    if not server.token and _earlier_release(settings) is not None:
        return None  # this home's, from before an upgrade: replaced by whoever starts one
    if not server.token or answer.get("token") != server.token:
        owner = answer.get("home") or "a server that is not a loopline home's"
        raise PrefectServerError(
            f"{settings.prefect_home / STATE} names the Prefect server at {server.ui_url} "
            f"(supervisor pid {server.pid}), but the server there belongs to {owner}, "
            f"not to {settings.home}; it was not used. If this home's server does not run, "
            f"delete {settings.prefect_home / STATE} and run the command again: this home "
            "then starts its own."
        )
    return server


def identity(server: HomeServer) -> dict | None:
    """What the server on ``server.port`` says it is: ``{"home", "token"}``, ``{}`` from
    a server that is not a loopline home's, None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"{server.ui_url}{IDENTITY_PATH}", timeout=5) as response:
            answer = json.loads(response.read())
    except (urllib.error.HTTPError, ValueError):  # an answer, but not a loopline home's
        return {}
    except OSError:
        return None
    return answer if isinstance(answer, dict) else {}


def ensure(settings: Settings) -> HomeServer:
    """The home's server, started (and waited for) when none is up. The idle clock
    restarts as it returns, so a caller without a lease yet has a whole idle time to take
    one; :func:`api` takes its lease before."""
    with _claimed(settings):
        server = running(settings) or _start(settings)
    (settings.prefect_home / LEASES).mkdir(exist_ok=True)
    (settings.prefect_home / LEASES / ".last").touch()
    return server


def start_in_background(settings: Settings) -> None:
    """Start the home's server, or leave the one starting, without waiting for it to
    answer: a run that needs none yet goes on, and the next command finds it up."""
    with _claimed(settings, wait=False) as claimed:
        if not claimed:
            return  # another command holds the claim: it is starting the server
        if running(settings) is not None or _starting(settings) is not None:
            return
        supervisor = _spawn(settings, after=os.getpid())
        # Held until it names itself in server.json, so no second command starts another.
        deadline = time.monotonic() + 30
        while supervisor.poll() is None and time.monotonic() < deadline:
            if (named := recorded(settings)) is not None and named.pid == supervisor.pid:
                return
            time.sleep(0.02)


def _starting(settings: Settings) -> HomeServer | None:
    """The server.json of this home's supervisor that is still starting its server."""
    starting = recorded(settings)
    return starting if starting is not None and _supervises(starting.pid, settings) else None


def _start(settings: Settings) -> HomeServer:
    """Wait for this home's supervisor if one is starting its server, else start one."""
    if (starting := _starting(settings)) is not None:
        return _wait_started(settings, starting.pid, lambda: processes.alive(starting.pid))
    supervisor = _spawn(settings)
    return _wait_started(settings, supervisor.pid, lambda: supervisor.poll() is None)


def _spawn(settings: Settings, after: int | None = None) -> subprocess.Popen:
    """The home's supervisor; with ``after``, it starts the server once that pid exits."""
    (settings.prefect_home / STATE).unlink(missing_ok=True)
    engine_env.prepare_logs(settings)
    return subprocess.Popen(
        [
            *(sys.executable, "-m", SUPERVISOR, "--home", str(settings.home)),
            *("--port", str(settings.prefect.port), "--idle", str(settings.prefect.idle_s)),
            *(("--after", str(after)) if after is not None else ()),
        ],
        env={**os.environ, **engine_env.engine_environment(settings), "PREFECT_API_URL": ""},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(settings.logs / "prefect-server.log", "ab"),  # noqa: SIM115 - the child's
        start_new_session=True,  # outlives this command; it stops itself when idle
    )


def _supervises(pid: int, settings: Settings) -> bool:
    """Whether ``pid`` is a supervisor of this home (one still starting its server)."""
    command = _command(pid)
    return SUPERVISOR in command and str(settings.home) in command and "--serve" not in command


def _command(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def _wait_started(settings: Settings, pid: int, alive: Callable[[], bool]) -> HomeServer:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not alive():
            raise PrefectServerError(
                f"the Prefect server for {settings.home} did not start; "
                f"see {settings.logs / 'prefect-server.log'}"
            )
        if (server := running(settings)) is not None:
            return server
        time.sleep(0.2)
    processes.stop_tree(pid)
    raise PrefectServerError(
        f"the Prefect server for {settings.home} did not answer within {START_TIMEOUT_S:.0f} s; "
        f"see {settings.logs / 'prefect-server.log'}"
    )


def stop(settings: Settings, timeout: float = 30) -> bool:
    """Stop the home's server, or the supervisor still starting it; True if one was."""
    if (earlier := _earlier_release(settings)) is not None:
        _stop_supervisor(earlier, timeout)
        return True
    server = running(settings)
    if server is None:
        server = recorded(settings)
        if server is None or not _supervises(server.pid, settings):
            return False
    _stop_supervisor(server.pid, timeout)
    return True


def _stop_supervisor(pid: int, timeout: float = 30) -> None:
    os.kill(pid, signal.SIGTERM)  # the supervisor stops its server, then exits
    deadline = time.monotonic() + timeout
    while processes.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if processes.alive(pid):
        processes.stop_tree(pid, grace=0)


def _earlier_release(settings: Settings) -> int | None:
    """The pid of this home's server supervisor as a release before tokens started it
    (still running across an upgrade), or None. Its server cannot prove whose it is, so
    it is stopped rather than used; its command line names this home."""
    server = recorded(settings)
    if server is None or server.token or not processes.alive(server.pid):
        return None
    command = _command(server.pid)
    ours = EARLIER_SUPERVISOR in command and str(settings.home) in command
    return server.pid if ours else None


@contextlib.contextmanager
def lease(settings: Settings) -> Iterator[None]:
    """Keep the home's server up while this process uses it (take it before ``ensure``)."""
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
    return [pid for pid in live_leases(settings.prefect_home / LEASES) if pid != os.getpid()]


def live_leases(folder: Path) -> list[int]:
    """The pids holding a lease in ``folder``; leases of dead processes are removed."""
    live = []
    for path in folder.glob("[0-9]*"):
        if processes.alive(int(path.name)):
            live.append(int(path.name))
        else:
            path.unlink(missing_ok=True)  # its command was killed
    return live


@contextlib.contextmanager
def api(settings: Settings) -> Iterator[str]:
    """The Prefect API this process should use, held for the duration of the block.

    An exported ``PREFECT_API_URL`` wins; otherwise the home's server is started or
    reused, and ``PREFECT_API_URL`` is exported to this process and its children. The
    lease comes first, so a short idle time cannot stop the server this waits for.
    """
    if exported := os.environ.get("PREFECT_API_URL"):
        yield exported
        return
    with lease(settings):
        server = ensure(settings)
        os.environ["PREFECT_API_URL"] = server.api_url
        try:
            yield server.api_url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@contextlib.contextmanager
def _claimed(settings: Settings, *, wait: bool = True) -> Iterator[bool]:
    """The home's server lock: one command at a time starts the server (another waits,
    or with ``wait=False`` is told False). A server an earlier release left running is
    stopped first: it cannot prove it is this home's."""
    folder = settings.prefect_home
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        if (earlier := _earlier_release(settings)) is not None:
            _stop_supervisor(earlier)
        yield True


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
