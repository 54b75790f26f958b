"""One root: every exception loopline defines is a LooplineError, and the CLI answers
with the code it carries (2 for a usage error, 1 for failed work, 1 for anything else)."""

from __future__ import annotations

import ast
import builtins
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


def test_a_bad_setting_exits_2_from_the_real_cli(tmp_path, monkeypatch):
    from loopline.cli import app

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    monkeypatch.setenv("LOOPLINE_GATE_METRIC", "auc")
    answer = CliRunner().invoke(app, ["status"])
    assert answer.exit_code == 2 and "LOOPLINE_GATE_METRIC" in answer.output
