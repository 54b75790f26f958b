"""Servers of their own: one with an API key, one killed with SIGKILL under load.

Both share the session's registry (its tracking URI) but keep a private LOOPLINE_HOME,
so their prediction logs hold only their own requests.
"""

from __future__ import annotations

import time

import httpx
import pytest

from loopline.core.settings import load_settings
from loopline.serving.server import start_server
from tests.conftest import free_port
from tests.conftest import logged as read_log
from tests.serving.load import ROW, Load

pytestmark = pytest.mark.xdist_group("served")  # shares the session's server


@pytest.fixture
def own_settings(served, tmp_path):
    return load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path / "home"),
            "LOOPLINE_TRACKING_URI": served.settings.tracking_uri,
        }
    )


def test_a_keyed_server_needs_its_key_and_every_answer_survives_kill_9(own_settings, tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-key\n")
    log_path = tmp_path / "serve.log"
    server = start_server(
        own_settings,
        port=free_port(),
        log_path=log_path,
        env={"LOOPLINE_API_KEY_FILE": str(key_file)},
    )
    server.wait_ready()
    url = f"{server.url}/predict"
    missing = httpx.post(url, json={"instances": ROW})
    wrong = httpx.post(url, json={"instances": ROW}, headers={"X-API-Key": "s3cret-kex"})
    assert missing.status_code == wrong.status_code == 401
    assert "X-API-Key" in missing.json()["error"]
    assert httpx.get(f"{server.url}/readyz").status_code == 200  # probes stay open
    # No labelling key is configured: labelling is closed, and the API key cannot label.
    labels = {"labels": [{"request_id": "x", "label": "1"}]}
    closed = httpx.post(f"{server.url}/feedback", json=labels, headers={"X-API-Key": "s3cret-key"})
    assert closed.status_code == 403 and "LOOPLINE_LABEL_KEYS" in closed.json()["error"]
    load = Load([server.url], headers={"X-API-Key": "s3cret-key"}).start()
    time.sleep(3)
    server.kill()  # SIGKILL to every server process: no shutdown hook, no flush
    load.stop()
    answered = load.answered
    assert len(answered) > 50, "the load did not get going"
    logged = read_log(own_settings)
    per_request = logged.groupby("request_id")["item"].count()
    missing = [r for r in answered if per_request.get(r, 0) != 3]
    assert not missing, f"{len(missing)} answered requests are not (wholly) in the log"
    assert "s3cret" not in log_path.read_text()  # the key is never logged


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "sigkill-server-group"])
def test_loopline_serve_leaves_no_process_when_stopped_or_killed(served, tmp_path, how):
    """`loopline serve` says where it serves. SIGTERM (Ctrl-C takes the same path) stops
    every process within the grace period, with the log flushed; a killed `loopline
    serve`, or a killed server group, takes its workers along."""
    import os
    import signal
    import subprocess

    import psutil

    from tests.conftest import VENV_BIN

    port = free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "LOOPLINE_HOME": str(home),
        "LOOPLINE_TRACKING_URI": served.settings.tracking_uri,
    }
    process = subprocess.Popen(
        [str(VENV_BIN / "loopline"), "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    text = " ".join("".join(lines).split())
    assert f"at http://127.0.0.1:{port}" in text and "Swagger UI" in text, text
    ids = [
        httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": ROW}).json()["request_id"]
        for _ in range(20)
    ]
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    workers = [p for p in tree if "_bentoml_impl.worker" in " ".join(p.cmdline())]
    assert len(workers) == 1, [p.cmdline() for p in tree]  # the service; the model is in it
    started = time.monotonic()
    if how == "sigterm":
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    elif how == "sigkill":
        process.kill()
        process.wait()
    else:
        server = next(p for p in tree if "bentoml" in " ".join(p.cmdline()[:2]))
        os.killpg(server.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs([p for p in tree if p.pid != process.pid], timeout=40)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert time.monotonic() - started < 40
    if how != "sigterm":
        process.kill()
        process.wait()
    logged = read_log(load_settings({"LOOPLINE_HOME": str(home)}))
    assert set(ids) <= set(logged["request_id"])
