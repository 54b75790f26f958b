"""The one place that turns an exception into a message and an exit code.

Exit codes (scripts rely on them): 0 success; 1 the work failed (a pipeline, a server);
2 a usage or configuration error (a bad flag, or a :class:`loopline.core.errors.UsageError`).
A :class:`loopline.core.errors.LooplineError` carries its own code; any other exception
is a failure of the work.
A traceback goes to ``LOOPLINE_HOME/logs/errors.log``, and to the terminal with
``--verbose``; the terminal always gets the message and where the details are.
"""

from __future__ import annotations

import errno
import functools
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import typer
from rich.markup import escape
from typer.exceptions import TyperException

from loopline.cli.options import console, first_line, verbose
from loopline.core.errors import LooplineError
from loopline.core.settings import read as read_setting

FAILED = 1  # anything that is not a LooplineError is a failure of the work


def handled(command: Callable) -> Callable:
    """Wrap a command so that its errors leave as a clear message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):  # typer's own exits and usage errors
            raise
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except LooplineError as exc:
            if exc.exit_code == FAILED:
                _failed(exc, kwargs.get("ctx"))
            console.print(f"[red]error[/]: {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if not _home_unwritable(exc):
                _failed(exc, kwargs.get("ctx"))
            home = read_setting("LOOPLINE_HOME")
            console.print(
                f"[red]error[/]: LOOPLINE_HOME={escape(str(home))} cannot be written "
                f"({escape(exc.strerror or str(exc))}: {escape(str(exc.filename))}); point "
                "LOOPLINE_HOME at a folder you can write, or fix its permissions",
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
        except Exception as exc:
            _failed(exc, kwargs.get("ctx"))

    return wrapper


def _home_unwritable(exc: OSError) -> bool:
    """A permission or read-only error on a path inside LOOPLINE_HOME: configuration."""
    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not exc.filename:
        return False
    home = Path(read_setting("LOOPLINE_HOME")).resolve()
    path = Path(str(exc.filename)).resolve()
    return path == home or home in path.parents


def _failed(exc: Exception, ctx) -> None:
    """The work failed: its first line, and the traceback in the log (or on screen)."""
    where = record(exc)
    console.print(
        f"[red]error[/]: {escape(type(exc).__name__)}: {escape(first_line(str(exc)))}",
        soft_wrap=True,
    )
    if verbose(ctx):
        console.print(escape("".join(traceback.format_exception(exc))), soft_wrap=True)
    elif where:
        console.print(f"details: {where} (or run again with --verbose)", soft_wrap=True)
    raise typer.Exit(FAILED) from None


def record(exc: BaseException) -> Path | None:
    """Append the traceback to the home's error log; None when it cannot be written."""
    home = read_setting("LOOPLINE_HOME")
    target = home / "logs" / "errors.log"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as log:
            log.write(f"--- {datetime.now().isoformat(timespec='seconds')}\n")
            log.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return target
