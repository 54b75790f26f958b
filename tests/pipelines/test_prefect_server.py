"""Each LOOPLINE_HOME has its own Prefect server (issue 28 §1): homes that start at the
same moment never share one, a client refuses a server that is not its home's, and a
short LOOPLINE_PREFECT_IDLE does not stop a server while it starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from loopline.core.errors import LooplineError
from loopline.core.settings import SettingsError, load_settings
from loopline.pipelines.local import prefect_server, run_history
from loopline.serving.server import free_port
from tests.conftest import VENV_BIN

ONE_STEP = Path(__file__).with_name("plus_one.py")
HOMES = 8
# Eight first starts of Prefect on a loaded 2-core machine: each alone takes 9-47 s.
RACE_TIMEOUT_S = 900


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.update(HOME=str(home / "user"), LOOPLINE_HOME=str(home), **extra)
    (home / "user").mkdir(parents=True, exist_ok=True)
    return env


def loopline(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(VENV_BIN / "loopline"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def left_behind(root: Path) -> list[str]:
    """Processes started for the homes under ``root`` that still run."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        text = " ".join(process.info["cmdline"] or []) + json.dumps(process.info["environ"] or {})
        if str(root) in text and process.pid != os.getpid():
            found.append(f"{process.pid}: {' '.join(process.info['cmdline'] or [])[:200]}")
    return found


def stop_all(homes: list[Path], root: Path) -> None:
    for home in homes:
        prefect_server.stop(load_settings({"LOOPLINE_HOME": str(home)}))
    deadline = time.monotonic() + 60
    while left_behind(root) and time.monotonic() < deadline:
        time.sleep(0.5)


def recorded(home: Path, deadline: float) -> None:
    """Wait until ``home``'s server is up and has recorded the runs that went before it."""
    settings = load_settings({"LOOPLINE_HOME": str(home)})
    while prefect_server.running(settings) is None or run_history.pending(settings.prefect_home):
        assert time.monotonic() < deadline, (home / "logs" / "prefect-server.log").read_text()
        time.sleep(0.5)


def flow_run_names(port: int) -> list[str]:
    response = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}, timeout=30)
    response.raise_for_status()
    return sorted(run["name"] for run in response.json())


@pytest.mark.slow
def test_eight_homes_starting_at_once_each_run_in_their_own_server(tmp_path):
    """All eight prefer the same port; each binds its own, records it, and its run is the
    only flow run in its own home's server."""
    (tmp_path / "plus_one.py").write_text(ONE_STEP.read_text())
    homes = [tmp_path / f"home{i}" for i in range(HOMES)]
    wanted = str(free_port())
    runs = []
    try:
        for home in homes:
            env = fresh_env(home, LOOPLINE_PREFECT_PORT=wanted, LOOPLINE_PREFECT_IDLE="10m")
            runs.append(loopline("run", str(tmp_path / "plus_one.py"), "--json", env=env))
        deadline = time.monotonic() + RACE_TIMEOUT_S
        outputs = [run.communicate(timeout=max(1, deadline - time.monotonic())) for run in runs]
        for run, (_, stderr) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, stderr[-3000:]
        names = [json.loads(stdout)["run"] for stdout, _ in outputs]

        ports = []
        for home, name in zip(homes, names, strict=True):
            recorded(home, deadline)  # the runs went at once; each server records its own
            state = json.loads((home / "prefect" / "server.json").read_text())
            ports.append(state["port"])
            assert flow_run_names(state["port"]) == [name], home
        assert len(set(ports)) == HOMES
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
        stop_all(homes, tmp_path)
    assert left_behind(tmp_path) == []


@pytest.mark.slow
def test_a_cold_run_with_an_idle_time_shorter_than_the_start_up_succeeds(tmp_path):
    """LOOPLINE_PREFECT_IDLE=2s: the start-up is not idle time; once the run ends, the
    server stops by itself about 2 s later."""
    (tmp_path / "plus_one.py").write_text(ONE_STEP.read_text())
    home = tmp_path / "home"
    env = fresh_env(home, LOOPLINE_PREFECT_PORT=str(free_port()), LOOPLINE_PREFECT_IDLE="2s")
    run = loopline("run", str(tmp_path / "plus_one.py"), "--json", env=env)
    try:
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        assert json.loads(stdout)["outputs"] == {"Output": 2}
        # The run did not wait for the server: it starts, records the run, and stops ~2 s
        # after it first answered, however long it took to start.
        deadline = time.monotonic() + 300
        while left_behind(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left_behind(tmp_path) == []
        assert not (home / "prefect" / "server.json").exists()
        assert run_history.pending(home / "prefect") == []  # recorded before it stopped
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        stop_all([home], tmp_path)


class _OtherHome(BaseHTTPRequestHandler):
    """Another home's server: healthy, but it is not ours."""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"home": "/somewhere/else/prefect", "token": "theirs"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def other_home_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherHome)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_server_of_another_home_is_refused_never_used(tmp_path, other_home_server):
    """server.json names a live process and a port where another home's server answers:
    a clear error naming both homes and the fix, not that server."""
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    settings.prefect_home.mkdir(parents=True)
    state = {"pid": os.getpid(), "port": other_home_server, "token": "ours"}
    (settings.prefect_home / "server.json").write_text(json.dumps(state))
    with pytest.raises(LooplineError) as info:
        prefect_server.running(settings)
    message = str(info.value)
    assert "/somewhere/else/prefect" in message and str(settings.home) in message
    assert "server.json" in message and "delete" in message
    with pytest.raises(LooplineError):
        prefect_server.ensure(settings)


def test_a_server_started_before_an_upgrade_is_stopped_not_refused(tmp_path, other_home_server):
    """A release before tokens left this home's server running (server.json without a
    token): `server --stop` stops it, where the token check alone would refuse it and
    leave it running. Another home's tokenless server is still never touched."""
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    settings.prefect_home.mkdir(parents=True)
    earlier = subprocess.Popen(  # what 0.1.x's supervisor looks like: its command names the home
        [sys.executable, "-c", "import time; time.sleep(120)", "-m",
         prefect_server.EARLIER_SUPERVISOR, "--home", str(settings.home)]
    )  # fmt: skip
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        state = settings.prefect_home / "server.json"
        state.write_text(json.dumps({"pid": other.pid, "port": other_home_server}))
        with pytest.raises(LooplineError):  # not this home's: refused, and left alone
            prefect_server.stop(settings)
        assert other.poll() is None
        state.write_text(json.dumps({"pid": earlier.pid, "port": other_home_server}))
        assert prefect_server.stop(settings) is True
        assert earlier.wait(timeout=30) is not None
    finally:
        earlier.kill()
        other.kill()


def test_a_preferred_port_in_use_gives_a_port_the_os_chooses():
    from loopline.pipelines.local.prefect_supervisor import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with bind(port) as sock:
            assert sock.getsockname()[1] not in (port, 0)
    with bind(port) as sock:  # free again: the preferred port
        assert sock.getsockname()[1] == port


@pytest.mark.parametrize("idle", ["0s", "0m", "-5s", "soon", "2"])
def test_a_nonsensical_idle_time_is_refused_naming_the_setting(idle):
    with pytest.raises(SettingsError, match="LOOPLINE_PREFECT_IDLE"):
        load_settings({"LOOPLINE_PREFECT_IDLE": idle})


def test_the_cli_exits_2_on_a_zero_idle_time(tmp_path):
    env = fresh_env(tmp_path, LOOPLINE_PREFECT_IDLE="0s")
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "server", "--stop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "LOOPLINE_PREFECT_IDLE" in result.stderr


class _Serving:
    def poll(self):
        return None


def test_the_idle_clock_starts_when_the_server_first_answers(tmp_path):
    """A start-up (20 ticks) far longer than the idle time (5 ticks) does not stop the
    server; once it answers, the idle time without a lease does."""
    from loopline.pipelines.local.prefect_supervisor import _watch

    asked = []

    def answers() -> bool:
        asked.append(True)
        return len(asked) > 20

    _watch(tmp_path, _Serving(), 0.05, [], answers=answers, tick=0.01)
    assert len(asked) == 21
