"""Process trees that stop when told: servers, workers and their children.

BentoML and Prefect start workers in process groups of their own, so signalling one
group leaves the rest running. Stopping walks the whole tree instead, and children that
must not outlive their parent ask the kernel to signal them when it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
from collections.abc import Iterator

import psutil

PR_SET_PDEATHSIG = 1


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (``preexec_fn``, or first thing at start): get ``sig`` when the parent
    dies, even by ``kill -9``. Linux only; elsewhere a no-op."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return


def stop_tree(pid: int, *, grace: float = 20.0, sig: int = signal.SIGTERM) -> list[int]:
    """Signal ``pid`` and all its descendants, wait ``grace`` seconds, then SIGKILL the
    survivors. Returns the pids that needed SIGKILL."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    for process in tree:
        _signal(process, sig)
    _, survivors = psutil.wait_procs(tree, timeout=grace)
    for process in survivors:
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(survivors, timeout=5)
    return [p.pid for p in survivors]


def kill_tree(pid: int) -> None:
    """``kill -9`` for a whole tree: nothing gets to clean up."""
    stop_tree(pid, grace=0, sig=signal.SIGKILL)


def _signal(process: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(sig)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a Kubernetes pod stop) like Ctrl-C: the command's own
    clean-up runs and stops what it started, instead of the process vanishing."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
