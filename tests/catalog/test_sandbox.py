"""Submitted components are hostile until checked: each technique that got past the old
in-process audit hook must fail ``side_effects`` now, without acting on this machine, and
the example must run with no platform secret, file or network within reach.

Everything here runs the real sandbox (bubblewrap, strace, prlimit); nothing is faked.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess

import pytest

from loopline.catalog import checks
from loopline.core.images import platform
from loopline.core.settings import load_settings
from tests.catalog.test_checks import folder

TEXT = '[example.inputs]\ntext = "hi"\n'
COMPONENT = f'''
from kfp import dsl


@dsl.component(base_image="{platform()}")
def shout(text: str) -> str:
    """Upper-cases text.

    Args:
        text: The words.
    """
    return text.upper()
'''

# Each: what the file does at import; the effect the tracer must name.
HOSTILE = {
    "ctypes_system": (
        "import ctypes\nctypes.CDLL(None).system(b'touch {target}')\n",
        "starts a process",
    ),
    "atexit_write": (
        "import atexit\natexit.register(lambda: open('{target}', 'w').write('x'))\n",
        "writes a file",
    ),
    "late_thread": (
        "import threading, time\n"
        "def later():\n    time.sleep(1.5)\n    open('{target}', 'w').write('x')\n"
        "threading.Thread(target=later).start()\n",
        "writes a file",
    ),
    "sqlite_file": (
        "import sqlite3\nsqlite3.connect('{target}').execute('create table t (x)')\n",
        "writes a file",
    ),
    "stack_walk_then_act": (
        "import socket, subprocess, sys\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    for value in list(frame.f_locals.values()):\n"
        "        if isinstance(value, list) and value == [True]:\n"
        "            value[0] = False\n"
        "    frame = frame.f_back\n"
        "subprocess.run(['touch', '{target}'])\n"
        "try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "except OSError:\n    pass\n",
        "starts a process",
    ),
    "kill_another_process": (
        "import os, signal\ntry:\n    os.kill({victim}, signal.SIGKILL)\n"
        "except OSError:\n    pass\n",
        "signals a process",
    ),
    "hard_link": (
        "import os\ntry:\n    os.link(__file__, '{target}')\nexcept OSError:\n    pass\n",
        "changes files",
    ),
    "stdout_replaced": (
        "import io, sys\nsys.stdout = io.StringIO()\nopen('{target}', 'w').write('x')\n",
        "writes a file",
    ),
    "socket_to_this_machine": (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "except OSError:\n    pass\n",
        "network access",
    ),
}


@pytest.fixture
def listener():
    """A TCP server on this machine's loopback, counting who reaches it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    yield server
    server.close()


def reached(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("technique", sorted(HOSTILE))
def test_a_hostile_import_fails_side_effects_and_does_nothing_here(technique, tmp_path, listener):
    victim = subprocess.Popen(["sleep", "60"])
    target = tmp_path / "touched"
    try:
        effect, named = HOSTILE[technique]
        source = (
            effect.format(target=target, port=listener.getsockname()[1], victim=victim.pid)
            + COMPONENT
        )
        settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
        report = checks.check(folder(tmp_path, source, meta=None), settings)
        results = {r.name: r for r in report.results}
        assert results["side_effects"].passed is False, checks.describe(report)
        assert named in results["side_effects"].message
        # Contained: nothing was written here, the victim lives, nobody connected.
        assert not target.exists()
        assert victim.poll() is None
        assert not reached(listener)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


def test_a_plain_component_passes_side_effects(tmp_path):
    """The control: the tracer does not blame the probe's own work on the file."""
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    report = checks.check(folder(tmp_path, COMPONENT, TEXT), settings)
    results = {r.name: r for r in report.results}
    assert results["side_effects"].passed, checks.describe(report)
    assert results["example"].passed, checks.describe(report)


SNOOP = f'''
from kfp import dsl


@dsl.component(base_image="{platform()}")
def snoop(database: str, home: str, port: int) -> str:
    """Looks for the platform's secrets, and fails loudly when it finds one.

    Args:
        database: The platform database file.
        home: The platform's home.
        port: A service on the checker's loopback.
    """
    import os
    import socket

    found = [k for k in os.environ if k.startswith(("LOOPLINE_API", "LOOPLINE_DATABASE"))]
    found += [k for k, v in os.environ.items() if "s3cret" in v]
    for path in (database, home + "/mlflow.db"):
        try:
            with open(path, "rb") as handle:
                found.append(path + ": " + repr(handle.read(16)))
        except OSError:
            pass
    if os.path.isdir(home) and os.listdir(home):
        found.append("home: " + ", ".join(os.listdir(home)))
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        found.append("network")
    except OSError:
        pass
    if found:
        raise RuntimeError("LEAKED " + "; ".join(found))
    return "found nothing"
'''


def test_the_example_runs_without_the_platforms_secrets_files_or_network(
    tmp_path, monkeypatch, listener
):
    home = tmp_path / "home"
    home.mkdir()
    database = home / "loopline.db"
    sqlite3.connect(database).execute("create table secrets (x)").connection.commit()
    (home / "mlflow.db").write_bytes(b"SQLite format 3\x00 registry")
    monkeypatch.setenv("LOOPLINE_API_KEY", "s3cret-key")
    monkeypatch.setenv("LOOPLINE_DATABASE_URL", "postgresql://loopline:s3cret@db/loopline")
    settings = load_settings({"LOOPLINE_HOME": str(home)})
    meta = (
        f'[example.inputs]\ndatabase = "{database}"\nhome = "{home}"\n'
        f"port = {listener.getsockname()[1]}\n"
    )
    report = checks.check(folder(tmp_path, SNOOP, meta=meta), settings)
    results = {r.name: r for r in report.results}
    assert results["example"].passed, results["example"].message
    assert "Output" in results["example"].message  # it ran to its end
    assert not reached(listener)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("    block = bytearray(64 << 30)\n", "MemoryError"),
        (
            "    with open('big', 'wb') as handle:\n"
            "        for _ in range(1024):\n"
            "            handle.write(bytes(1 << 20))\n",
            "File too large",  # the file-size limit (Python ignores SIGXFSZ)
        ),
    ],
)
def test_the_example_runs_within_limits(tmp_path, body, why):
    source = COMPONENT.replace("    return text.upper()\n", body + "    return text.upper()\n")
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    report = checks.check(folder(tmp_path, source, TEXT), settings)
    results = {r.name: r for r in report.results}
    assert results["example"].passed is False
    assert why in results["example"].message


FORGER = """
import json, os, sys
import kfp.compiler

FORGED = "FORGED-EXECUTOR rm -rf /"


def forged(self, component, path, *args, **kwargs):
    with open(path, "w") as handle:
        handle.write("# PIPELINE DEFINITION\\n" + FORGED)


kfp.compiler.Compiler.compile = forged  # what the probe compiles with, in this process
for fd in range(3, 64):  # and a report of its own on every descriptor it can find
    try:
        os.pwrite(fd, json.dumps({"components": {"shout": FORGED}, "import_error": None,
                                  "compile_error": None}).encode() + b"\\n", 0)
    except OSError:
        pass
"""


def test_the_published_yaml_is_compiled_without_the_files_other_code(tmp_path):
    """The file rewrites the compiler and writes a report of its own: the YAML the catalog
    would publish comes from a run of its imports and its function alone."""
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    report = checks.check(folder(tmp_path, FORGER + COMPONENT, TEXT), settings)
    assert "FORGED" not in (report.component_yaml or "")
    assert "def shout(text: str) -> str:" in report.component_yaml


def test_an_example_file_outside_the_component_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("platform secret")
    source = COMPONENT.replace("def shout(text: str)", "def shout(text: str, data: Input[Dataset])")
    source = source.replace(
        "from kfp import dsl\n", "from kfp import dsl\nfrom kfp.dsl import Dataset, Input\n"
    )
    source = source.replace(
        "        text: The words.\n", "        text: The words.\n        data: A file.\n"
    )
    meta = f'[example.inputs]\ntext = "hi"\n[example.files]\ndata = "{secret}"\n'
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    report = checks.check(folder(tmp_path, source, meta), settings)
    results = {r.name: r for r in report.results}
    assert results["compiles"].passed, checks.describe(report)
    assert results["example"].passed is False
    assert "outside the component's folder" in results["example"].message


def test_the_machines_thread_caps_reach_inside_and_nothing_else_does(monkeypatch):
    """Threads spinning on busy cores slowed checks several times over; secrets stay out."""
    import sys

    from loopline.core.sandbox import Sandbox

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LOOPLINE_API_KEY", "s3cret-key")
    with Sandbox() as sandbox:
        outcome = sandbox.run(
            [sys.executable, "-c", "import os; print(sorted(os.environ.items()))"], timeout_s=60
        )
    assert outcome.returncode == 0, outcome.output
    assert "('OMP_NUM_THREADS', '1')" in outcome.output
    assert "s3cret-key" not in outcome.output and "LOOPLINE_API_KEY" not in outcome.output
