"""How a long step (a training) reports progress to whoever runs it.

The runner names a file in ``LOOPLINE_PROGRESS_FILE``; the step rewrites it, as JSON,
whenever it advances, and the CLI polls it to draw one bar per training. A file, rather
than the terminal, because the step may run in a worker process or on a Ray worker whose
output goes to a log; with no file named, the step draws its own bar.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from loopline.core.settings import read as read_setting

ENV = "LOOPLINE_PROGRESS_FILE"


class FileProgress:
    """A tqdm-like bar that writes ``{"done", "total", "description"}`` to a file."""

    def __init__(self, path: str | Path, total: int, initial: int = 0):
        self.path = Path(path)
        self.total, self.done, self.description = total, initial, ""
        self._write()

    def update(self, n: int = 1) -> None:
        self.done += n
        self._write()

    def set_description(self, desc: str) -> None:
        self.description = desc
        self._write()

    def close(self) -> None:
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"done": self.done, "total": self.total, "description": self.description})
        )
        tmp.replace(self.path)  # readers never see half a file


def read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def target() -> str | None:
    """The progress file this process's runner asked for, if any."""
    found = read_setting(ENV)
    return str(found) if found else None
