"""Which model `status`, `serve`, `deploy` and `rollback` act on without --model: the only
registered one; with several, a terminal is asked and a script is told to choose. Never one
model of several picked by a default name."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest
import yaml
from typer.testing import CliRunner

from loopline.cli import app
from loopline.core.settings import load_settings
from loopline.storage.registry import Registry
from tests.conftest import VENV_BIN

runner = CliRunner()


@pytest.fixture
def registered(home, monkeypatch):
    """Register model names (no versions needed to be listed) in the home's registry."""
    monkeypatch.delenv("LOOPLINE_MODEL_NAME", raising=False)

    def register(*names: str) -> None:
        client = Registry(load_settings()).client
        for name in names:
            client.create_registered_model(name)

    return register


def test_the_only_registered_model_is_the_one_acted_on(registered):
    registered("churn")
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["model"] == "churn"
    shown = runner.invoke(app, ["deploy", "--overlay", "local", "--dry-run"])
    assert shown.exit_code == 0, shown.output
    env = [
        e
        for doc in yaml.safe_load_all(shown.stdout)
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "loopline-serving"
        for c in doc["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e["name"] == "LOOPLINE_MODEL_NAME"
    ]
    assert [e["value"] for e in env] == ["churn"]


def test_several_models_and_no_choice_exit_2_naming_them(registered, monkeypatch):
    registered("churn", "digits-classifier", "tickets")
    for command in (["status"], ["serve", "--port", "1"], ["rollback"], ["deploy", "--overlay", "local", "--dry-run"]):  # fmt: skip
        answer = runner.invoke(app, command)
        said = " ".join(answer.output.replace("│", " ").split())  # rich wraps it in a box
        assert answer.exit_code == 2, (command, answer.output)
        assert "3 models are registered (churn, digits-classifier, tickets)" in said, said
        assert "--model NAME" in said and "Traceback" not in said
    # A choice, by flag or by setting, is taken as made.
    assert json.loads(runner.invoke(app, ["status", "--json", "--model", "tickets"]).stdout)["model"] == "tickets"  # fmt: skip
    monkeypatch.setenv("LOOPLINE_MODEL_NAME", "churn")
    assert json.loads(runner.invoke(app, ["status", "--json"]).stdout)["model"] == "churn"


def test_a_terminal_is_asked_which_model(registered, home):
    registered("churn", "tickets")
    env = {k: v for k, v in os.environ.items() if k != "LOOPLINE_MODEL_NAME"}
    leader, follower = pty.openpty()
    status = subprocess.Popen(
        [str(VENV_BIN / "loopline"), "status", "--json"],
        env={**env, "LOOPLINE_HOME": str(home), "COLUMNS": "200"},
        stdin=follower,
        stderr=follower,
        stdout=subprocess.PIPE,
    )
    os.close(follower)
    try:
        said = _read_until(leader, b"Which model")
        assert b"1. churn" in said and b"2. tickets" in said
        os.write(leader, b"9\n")  # no such number: asked again
        said += _read_until(leader, b"neither a number")
        os.write(leader, b"2\n")
        out, _ = status.communicate(timeout=60)
        while select.select([leader], [], [], 0.2)[0]:
            try:
                said += os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
    finally:
        status.kill()
        os.close(leader)
    assert status.returncode == 0, said.decode(errors="replace")
    assert json.loads(out)["model"] == "tickets"


def _read_until(terminal: int, text: bytes, timeout: float = 60) -> bytes:
    said, deadline = b"", time.monotonic() + timeout
    while text not in said:
        assert time.monotonic() < deadline, said
        if select.select([terminal], [], [], 1)[0]:
            said += os.read(terminal, 4096)
    return said
