"""The detached supervisor of one home's Prefect server, and the server process it runs.

``python -m loopline.pipelines.local.prefect_supervisor --home H --port P --idle S``:

- binds the server's socket itself, on ``P`` when that port is free, else on a port the
  OS chooses, and holds it for as long as it lives: no other home can take the port
  between the choice and the server's start (two homes starting at once both found 4200
  free, and the loser's client used the winner's server);
- writes ``server.json`` with its pid, the port it bound and a random token, and runs
  the server on that socket. The server answers :data:`IDENTITY_PATH` with the home and
  the token, so a client can tell its home's server from any other (``prefect_server``);
- gives a new home the migrated database template (``prefect_template``) before the
  server starts: a copy instead of Prefect's migrations;
- records in the server the runs that went before it was up (``run_history``), as soon
  as it answers and whenever more arrive;
- stops the server once no live process has held a lease for ``S`` seconds, counted
  from when the server first answers: a start-up longer than ``S`` is not idle time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from loopline.core import processes
from loopline.pipelines.local import run_history
from loopline.pipelines.local.prefect_server import (
    IDENTITY_PATH,
    LEASES,
    STATE,
    HomeServer,
    identity,
    live_leases,
)

# A first run that started the server in the background finishes before the server's start
# takes the cores; a longer one (a training) shares them after this.
AFTER_LIMIT_S = 20.0


def bind(preferred: int) -> socket.socket:
    """A socket bound on 127.0.0.1, to ``preferred`` if it is free, else to a port the OS
    chooses. Not listening yet: clients are refused until the server serves on it.

    No SO_REUSEADDR: on Linux it lets two sockets that do not listen yet bind one port,
    which is the race this prevents."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", preferred))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def supervise(home: Path, port: int, idle: float, after: int | None = None) -> int:
    from loopline.core.settings import load_settings

    settings = load_settings({**os.environ, "LOOPLINE_HOME": str(home)})
    folder = settings.prefect_home
    sock = bind(port)  # held until this process exits
    state = HomeServer(os.getpid(), sock.getsockname()[1], secrets.token_hex(16))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # The UI finds the API from these; left at 4200 it would show another home's runs.
    env.update(PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(state.port))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    (folder / STATE).write_text(json.dumps(asdict(state)))
    server = None
    try:
        if after is not None:  # the run that started it goes first, not sharing the cores
            _wait_gone(after, stopping, limit=AFTER_LIMIT_S)
        if stopping:
            return 0
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "loopline.pipelines.local.prefect_supervisor"),
                *("--serve", "--fd", str(sock.fileno()), "--home", str(settings.home)),
                *("--token", state.token),
                *(
                    ("--template", str(settings.prefect.template))
                    if settings.prefect.template
                    else ()
                ),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=[sock.fileno()],
            preexec_fn=processes.die_with_parent,  # a killed supervisor takes its server along
        )
        _watch(
            folder,
            server,
            idle,
            stopping,
            answers=lambda: (identity(state) or {}).get("token") == state.token,
            when_up=lambda: _record_pending(folder, state.api_url),
        )
    finally:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads((folder / STATE).read_text())["pid"] == os.getpid():
                (folder / STATE).unlink()
        if server is not None:
            processes.stop_tree(server.pid)
        sock.close()
    return 0


def _wait_gone(pid: int, stopping: list, *, limit: float) -> None:
    deadline = time.monotonic() + limit
    while processes.alive(pid) and not stopping and time.monotonic() < deadline:
        time.sleep(0.05)


def _watch(
    folder: Path,
    server: subprocess.Popen,
    idle: float,
    stopping: list,
    *,
    answers: Callable[[], bool],
    when_up: Callable[[], None] = lambda: None,
    tick: float = 1.0,
) -> None:
    """Return when asked to stop, when the server exits, or after ``idle`` seconds with
    no live lease; the idle clock starts once the server answers. ``when_up`` is called
    on every tick once it does."""
    started = False
    last_active = time.time()
    while not stopping and server.poll() is None:
        time.sleep(tick if started else min(tick, 0.05))  # the first answer, closely
        if not started:
            started = answers()
            last_active = time.time()
            if not started:
                continue
        when_up()
        if live_leases(folder / LEASES):
            last_active = time.time()
        last_active = max(last_active, _mtime(folder / LEASES / ".last"))
        if time.time() - last_active > idle:
            print(
                f"no loopline command used the server for {idle:.0f} s; stopping",
                file=sys.stderr,
                flush=True,
            )
            return


def _record_pending(folder: Path, api_url: str) -> None:
    """Runs that went before the server was up, recorded now; a failure is logged (to the
    server's log) and tried again on the next tick."""
    if not run_history.pending(folder):
        return
    try:
        recorded = run_history.import_pending(folder, api_url)
    except Exception as exc:  # noqa: BLE001 - the supervisor must outlive a bad record
        print(f"could not record a run in Prefect yet: {exc!r}", file=sys.stderr, flush=True)
        return
    print(f"recorded {recorded} earlier run(s) in Prefect", file=sys.stderr, flush=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# -- the server process: Prefect's app, served on the supervisor's socket ------------------


def serve(fd: int, home: str, token: str, template: Path | None = None) -> int:
    """What ``prefect server start`` runs (the API, the UI and the services), on the
    socket the supervisor bound, with :data:`IDENTITY_PATH` in front. A new home's
    database comes from the migrated template in ``template`` (``prefect_template``)."""
    from loopline.pipelines.local import prefect_template

    changes = {}
    try:
        if done := prefect_template.prepare(template):
            print(f"Prefect database: {done}", file=sys.stderr, flush=True)
            changes = prefect_template.registered()
    except Exception as exc:  # noqa: BLE001 - Prefect's own start-up migrates instead
        print(f"Prefect database: no template ({exc!r})", file=sys.stderr, flush=True)

    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import (
        PREFECT_SERVER_API_KEEPALIVE_TIMEOUT,
        PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL,
        PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT,
        PREFECT_SERVER_LOGGING_LEVEL,
        temporary_settings,
    )

    sock = socket.socket(fileno=fd)
    app = with_identity(create_app(final=True), {"home": home, "token": token})
    config = uvicorn.Config(
        app,
        timeout_keep_alive=PREFECT_SERVER_API_KEEPALIVE_TIMEOUT.value(),
        ws_ping_interval=PREFECT_SERVER_API_WEBSOCKET_PING_INTERVAL.value(),
        ws_ping_timeout=PREFECT_SERVER_API_WEBSOCKET_PING_TIMEOUT.value(),
        log_level=PREFECT_SERVER_LOGGING_LEVEL.value().lower(),
    )
    with temporary_settings(changes):  # uvicorn's event loop starts in this context
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def with_identity(app, answer: dict):
    """``app`` (ASGI) with ``GET IDENTITY_PATH`` answered by ``answer`` as JSON."""
    body = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def identified(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == IDENTITY_PATH:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return identified


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Supervise the Prefect server of one home.")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--idle", type=float)
    parser.add_argument("--serve", action="store_true", help="be the server, on --fd")
    parser.add_argument("--fd", type=int)
    parser.add_argument("--token")
    parser.add_argument("--template", type=Path, help="the migrated database's folder")
    parser.add_argument("--after", type=int, help="start the server once this pid exits")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.fd, str(args.home), args.token, args.template)
    return supervise(args.home, args.port, args.idle, args.after)


if __name__ == "__main__":
    sys.exit(main())
