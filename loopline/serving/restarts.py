"""Bounded worker restarts: a server whose workers keep dying stops, and says why.

BentoML's arbiter (circus) restarts a dead worker within a second
(:func:`check_workers_promptly`), and forever. A worker that dies on every start (a
corrupt file it maps, memory it cannot get) then loops, and clients wait on a socket that
nobody answers. So each worker start is written to a journal of its
server, ``$LOOPLINE_HOME/serve/<server>/starts``. A worker that starts after others died
waits before it loads anything (after a second death 1 s, then 2, 4, ... s, while its
HTTP answers 503). Past
``MAX_RESTARTS`` within ``WINDOW_S``, it writes the reason to ``gave-up`` and stops the
server, whose exit code is then not 0 (``loopline serve`` prints the reason; Kubernetes
restarts the pod with its own back-off).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger("loopline.serving")
WINDOW_S = 300.0
MAX_RESTARTS = 5
MAX_BACKOFF_S = 30.0
CHECK_DELAY_S = 1.0  # how often the arbiter looks for dead workers (circus's own default)


def journal_folder(home: Path, server_pid: int) -> Path:
    """One server's journal: its pid and start time, so a reused pid is another server."""
    started = int(psutil.Process(server_pid).create_time())
    return home / "serve" / f"{server_pid}-{started}"


@dataclass(frozen=True)
class Restarts:
    folder: Path | None  # None: the journal cannot be written (a full disk), no bound kept
    recent: int  # restarts within the window, this start included

    @property
    def backoff_s(self) -> float:
        """None for a first death (restarted at once), then 1, 2, 4, ... s."""
        return 0.0 if self.recent <= 1 else min(2.0 ** (self.recent - 2), MAX_BACKOFF_S)

    @classmethod
    def record(cls, home: Path, workers: int) -> Restarts:
        """Write this worker's start; count the restarts in the window. The first
        ``workers`` lines of a journal are the server's first starts, not restarts."""
        try:
            folder = journal_folder(home, os.getppid())
            folder.mkdir(parents=True, exist_ok=True)
            now = time.time()
            with open(folder / "starts", "a") as journal:  # one short append: atomic
                journal.write(f"{now:.3f}\n")
            starts = [float(line) for line in (folder / "starts").read_text().split()]
        except (OSError, ValueError, psutil.Error) as exc:
            log.warning("cannot keep the worker restart journal (%s); restarts are unbounded", exc)
            return cls(None, 0)
        return cls(folder, sum(1 for at in starts[workers:] if now - at < WINDOW_S))

    @property
    def exhausted(self) -> bool:
        return self.recent > MAX_RESTARTS

    def give_up(self) -> None:
        """Say why in the journal and the log, then stop the server (the arbiter)."""
        reason = (
            f"the server's workers died {self.recent} times within {WINDOW_S:.0f} s; "
            "the server stopped instead of restarting them again (the server log has each "
            "death's cause)"
        )
        log.error(reason)
        if self.folder is not None:
            (self.folder / "gave-up").write_text(reason + "\n")
        os.kill(os.getppid(), signal.SIGTERM)


def gave_up(folder: Path) -> str | None:
    """Why the server with this journal stopped itself, if it did."""
    reason = folder / "gave-up"
    return reason.read_text().strip() if reason.exists() else None


def check_workers_promptly() -> None:
    """Make ``bentoml serve``'s arbiter look for dead workers every ``CHECK_DELAY_S``.

    circus notices a dead worker only on its periodic check, which BentoML sets to 10 s
    (circus's own default is 1 s), so a worker that died left its clients waiting up to
    10 s before its successor even started. BentoML's reason, a check that collides with
    a command the arbiter is running (``ConflictError``), is avoided by skipping a check
    while one runs: the next comes a second later. The arbiter (``bentoml serve``) imports
    the service module, which calls this, before it creates itself; in a worker, or any
    other process, nothing changes."""
    if Path(sys.argv[0]).name != "bentoml" or sys.argv[1:2] != ["serve"]:
        return
    from bentoml._internal.utils import circus as helpers

    base = helpers.Arbiter
    if getattr(base, "check_delay_s", None) == CHECK_DELAY_S:
        return

    class Arbiter(base):
        check_delay_s = CHECK_DELAY_S

        def __init__(self, *args, **kwargs) -> None:
            kwargs["check_delay"] = min(kwargs.get("check_delay", CHECK_DELAY_S), CHECK_DELAY_S)
            super().__init__(*args, **kwargs)

        def manage_watchers(self):
            if self._exclusive_running_command is not None or self._restarting:
                return None  # busy (starting, stopping): checked again in a second
            return super().manage_watchers()

    helpers.Arbiter = Arbiter
