"""Several first commands on a fresh home create MLflow's SQLite store together: each
must succeed (one creates and migrates it, the others wait), none may see a half-made one.
A fresh machine's `make test` hit "table ... already exists" here."""

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import sys, time
from pathlib import Path
from loopline.storage.registry import Registry
from loopline.core.settings import load_settings
settings = load_settings({"LOOPLINE_HOME": sys.argv[1]})
go = Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported, ready to race
while not go.exists():
    time.sleep(0.01)
Registry(settings).champion("digits-classifier")
print("ok")
"""


def test_concurrent_first_registries_all_succeed(tmp_path):
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                SCRIPT,
                str(tmp_path / "home"),
                str(go),
                str(tmp_path / f"ready-{n}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(racers):  # all at the line, then go
        assert time.monotonic() < deadline, "the racers did not start"
        time.sleep(0.05)
    go.touch()
    for racer in racers:
        out, err = racer.communicate(timeout=180)
        assert racer.returncode == 0, err[-2000:]
        assert out.strip() == "ok"
