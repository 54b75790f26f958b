"""loopline's one root exception, carrying the exit code the CLI answers with.

- :class:`LooplineError`: the work failed (a pipeline step, a server that would not
  start, a registry that cannot be read). The CLI exits 1.
- :class:`UsageError`: something the user must change before anything can run (a
  setting, a flag, a file, a pipeline feature). The CLI exits 2.

Every exception loopline raises derives from one of them (``tests/core/test_errors.py``
walks the package); ``loopline/cli/errors.py`` maps by :attr:`LooplineError.exit_code`.
Each error's message names the problem and the fix; no traceback is needed to act on it.
Some also keep the built-in base that callers catch them by (``ValueError``,
``RuntimeError``).
"""

from __future__ import annotations


class LooplineError(Exception):
    """The root of loopline's errors: the work failed, exit code 1."""

    exit_code = 1


class UsageError(LooplineError, ValueError):
    """A usage or configuration error: exit code 2."""

    exit_code = 2
