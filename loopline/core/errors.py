"""The two kinds of failure every loopline entry point reports the same way.

- :class:`UsageError`: something the user must change before anything can run (a
  setting, a flag, a file, a pipeline feature). The CLI exits 2.
- Anything else that stops a command is a failure of the work itself (a pipeline step, a
  server that would not start). The CLI exits 1.

Each error's message names the problem and the fix; no traceback is needed to act on it.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A usage or configuration error: exit code 2."""
