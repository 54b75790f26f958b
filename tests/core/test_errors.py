"""One root: every exception loopline defines is a LooplineError, and the CLI answers
with the code it carries (2 for a usage error, 1 for failed work, 1 for anything else)."""

from __future__ import annotations

import ast
import builtins
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import loopline
from loopline.cli.errors import handled
from loopline.core.errors import LooplineError, UsageError

ROOT = Path(loopline.__file__).parent
BUILTIN = {
    n
    for n in dir(builtins)
    if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException)
}


def classes() -> dict[str, list[str]]:
    """Every class in the package, by its bases' names (read from the source, so no
    engine is imported): name -> bases."""
    found = {}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                found[node.name] = [ast.unparse(b).split(".")[-1] for b in node.bases]
    return found


def descendants(roots: set[str], bases: dict[str, list[str]]) -> set[str]:
    """``roots`` and every class that derives from one of them, however indirectly."""
    found, grew = set(roots), True
    while grew:
        grew = {n for n, b in bases.items() if n not in found and found & set(b)}
        found |= grew
    return found


def test_every_exception_loopline_defines_has_the_root():
    defined = classes()
    exceptions = descendants(BUILTIN, defined) & set(defined)
    assert len(exceptions) > 20  # the walk saw the package
    assert sorted(exceptions - descendants({"LooplineError"}, defined)) == []


# The same question asked of the imported classes (their real bases, third-party ones
# included, by module), in a child interpreter: importing every engine and the service
# (which reads its settings at import) must not leak into this session.
WALK = """
import importlib, inspect, json, pkgutil, sys
import loopline
from loopline.core.errors import LooplineError

SKIP = {"loopline.storage.migrations.env"}  # alembic's script, run only by alembic
failed, seen, rootless = {}, [], []

def record(name):
    failed[name] = repr(sys.exc_info()[1])

for info in pkgutil.walk_packages(loopline.__path__, "loopline.", onerror=record):
    if info.name in SKIP:
        continue
    try:
        module = importlib.import_module(info.name)
    except Exception:
        record(info.name)
        continue
    found = [c for c in vars(module).values() if inspect.isclass(c)]
    while found:
        cls = found.pop()
        if cls.__module__ != module.__name__:
            continue
        found += [c for c in vars(cls).values() if inspect.isclass(c)]
        if issubclass(cls, BaseException):
            seen.append(f"{module.__name__}.{cls.__qualname__}")
            if not issubclass(cls, LooplineError):
                rootless.append(seen[-1])
print(json.dumps({"failed": failed, "seen": seen, "rootless": sorted(rootless)}))
"""


@pytest.mark.slow  # imports every engine: half a minute
def test_every_exception_class_imported_from_loopline_has_the_root(tmp_path):
    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path)}
    walked = subprocess.run(
        [sys.executable, "-c", WALK], env=env, capture_output=True, text=True, timeout=600
    )
    assert walked.returncode == 0, walked.stderr
    answer = json.loads(walked.stdout.splitlines()[-1])
    assert answer["failed"] == {}  # every module imports: no optional runtime is missing
    assert len(answer["seen"]) > 20
    assert answer["rootless"] == []


def test_usage_errors_keep_their_code_and_builtin_base():
    assert LooplineError.exit_code == 1 and UsageError.exit_code == 2
    assert issubclass(UsageError, ValueError)  # callers that catch ValueError still do


class Broken(LooplineError, RuntimeError):
    """A failure of the work, as the registry's or a pipeline's."""


@pytest.mark.parametrize(
    ("raised", "code", "shown"),
    [
        (UsageError("LOOPLINE_X is bad; set it to y"), 2, "error: LOOPLINE_X is bad; set it to y"),
        (Broken("the registry is gone"), 1, "error: Broken: the registry is gone"),
        (RuntimeError("boom"), 1, "error: RuntimeError: boom"),
    ],
)
def test_the_cli_exits_with_the_code_the_error_carries(raised, code, shown, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    app = typer.Typer()

    @app.command()
    @handled
    def fail() -> None:
        raise raised

    answer = CliRunner().invoke(app, [])
    assert answer.exit_code == code
    assert shown in answer.output
    assert "Traceback" not in answer.output
    logged = tmp_path / "logs" / "errors.log"
    assert logged.exists() == (code == 1)  # failed work leaves its traceback in the log


@pytest.mark.parametrize(
    ("error", "inside", "code"),
    [
        (errno.EROFS, True, 2),
        (errno.EACCES, True, 2),
        (errno.EACCES, False, 1),
        (errno.ENOSPC, True, 1),
    ],
)
def test_a_home_that_cannot_be_written_is_a_configuration_error(
    error, inside, code, tmp_path, monkeypatch
):
    """A read-only or forbidden LOOPLINE_HOME exits 2 naming it; other OS errors, or ones
    outside the home, are failures of the work."""
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    where = tmp_path / ("home" if inside else "elsewhere") / "loopline.db"
    app = typer.Typer()

    @app.command()
    @handled
    def fail() -> None:
        raise OSError(error, os.strerror(error), str(where))

    answer = CliRunner().invoke(app, [])
    assert answer.exit_code == code, answer.output
    assert ("cannot be written" in answer.output) == (code == 2)
    assert "Traceback" not in answer.output


def test_a_bad_setting_exits_2_from_the_real_cli(tmp_path, monkeypatch):
    from loopline.cli import app

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    monkeypatch.setenv("LOOPLINE_GATE_METRIC", "auc")
    answer = CliRunner().invoke(app, ["status"])
    assert answer.exit_code == 2 and "LOOPLINE_GATE_METRIC" in answer.output
