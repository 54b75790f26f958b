"""The floors hold: import-linter's layers contract (pyproject.toml) passes, covers every
room of the package, and catches an upward import even inside a function."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def layers() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [contract] = config["contracts"]
    return {m.strip() for layer in contract["layers"] for m in layer.split("|")}


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_points_down():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_room_is_on_a_floor():
    rooms = {f"loopline.{p.parent.name}" for p in (ROOT / "loopline").glob("*/__init__.py")}
    assert rooms - layers() == set(), "a room outside the contract: add it to its floor"


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "loopline", tmp_path / "loopline", symlinks=True)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "loopline" / "storage" / "database.py", "a") as module:
        module.write("\n\ndef sneaky():\n    from loopline.monitoring import monitor\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "loopline.storage is not allowed to import loopline.monitoring" in result.stdout
