"""A sandbox for code the platform does not trust: a child process in its own namespaces.

The catalog imports and runs a submitted component here (``loopline.catalog``). Each run
gets, through bubblewrap (``bwrap``, Debian's ``bubblewrap``):

- new user, PID, network, IPC, UTS and cgroup namespaces, and no capabilities: no network
  at all (not even this machine's loopback services), and no other process to signal;
- a read-only view of the machine, with the platform's places hidden behind empty
  folders: ``LOOPLINE_HOME``, the database's folder, the caller's home, ``/root``,
  ``/home``, ``/run`` and PostgreSQL's sockets. The interpreter, its packages and the
  folders a run needs are bound back read-only;
- one writable folder, its scratch, mounted as ``/tmp``: its ``HOME`` (``/tmp/home``)
  and working folder (``/tmp/work``) are there;
- an empty environment: only ``PATH``, ``HOME``, ``LANG``, the machine's thread caps
  (``OMP_NUM_THREADS`` and the like, where set) and what the caller names;
- limits (``prlimit``): CPU time, address space, file size, open files and processes,
  plus a ``pids`` cgroup where this machine lets root make one (root is exempt from the
  process limit); a wall-clock timeout ends the whole tree.

What the child reports comes back on a file descriptor opened outside the sandbox, which
the child's own children never inherit, and is never read from its output. Asked to,
``trace`` the run is watched from outside by ``strace`` (ptrace): every attempt to
write a file, start a process, use the network or signal a process is seen, whatever the
traced code does to itself (:mod:`loopline.catalog.effects`).

What it cannot promise: the kernel is shared (a kernel exploit escapes any namespace);
files this machine lets everyone read stay readable unless hidden above; CPU and memory
are bounded per process, not in total, where no cgroup can be made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loopline.core import processes
from loopline.core.errors import UsageError

INSIDE = Path("/tmp")  # the scratch folder, as the child sees it
MAX_TRACE = 64 << 20  # bytes of strace output before a traced run is stopped
HIDDEN = ("/root", "/home", "/run", "/var/lib/postgresql")
PIDS_CGROUPS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
THREAD_CAPS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class SandboxUnavailable(UsageError):
    """This machine cannot run the sandbox; the message says what to install."""


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 300
    memory: int = 8 << 30  # address space, bytes
    file_size: int = 256 << 20
    open_files: int = 1024
    processes: int = 256


@dataclass
class Outcome:
    returncode: int | None  # None: stopped at the timeout
    output: str  # the child's stdout and stderr, for messages only
    report: bytes  # what the child wrote to its report descriptor
    trace: list[str] = field(default_factory=list)  # strace lines, when traced
    scratch: Path | None = None  # kept while the sandbox is open
    overflowed: bool = False  # stopped: its trace passed MAX_TRACE


class Sandbox:
    """One throw-away scratch folder, and runs of commands confined to it.

    ``hide``: more host folders to cover (the platform's home and database folder);
    ``readable``: host folders to bind back read-only at their own path.
    """

    def __init__(self, *, hide=(), readable=(), limits: Limits = Limits()):
        self.limits = limits
        self.covered = [Path(p) for p in (*HIDDEN, str(Path.home()))]
        self.hide = [Path(p) for p in hide]
        self.readable = [Path(p) for p in readable]  # bound back last, even where hidden
        self._tmp = tempfile.TemporaryDirectory(prefix="loopline-sandbox-")
        self.scratch = Path(self._tmp.name) / "scratch"
        (self.scratch / "home").mkdir(parents=True)
        (self.scratch / "work").mkdir()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def run(
        self,
        argv: list[str],
        *,
        timeout_s: float,
        env: dict[str, str] | None = None,
        trace: Iterable[str] = (),
    ) -> Outcome:
        """Run ``argv`` in the sandbox. ``{report_fd}`` in ``argv`` becomes the number of
        the report descriptor; ``trace`` names the system calls strace records."""
        bwrap, prlimit = _tool("bwrap", "bubblewrap"), _tool("prlimit", "util-linux")
        with tempfile.TemporaryFile(dir=self._tmp.name) as report, self._pids() as join:
            fd = report.fileno()
            argv = [a.replace("{report_fd}", str(fd)) for a in argv]
            command = [
                *join,
                prlimit,
                *self._limits(),
                "--",
                bwrap,
                *self._mounts(env),
                "--",
                *argv,
            ]
            trace_file = Path(self._tmp.name) / f"trace-{uuid.uuid4().hex}"
            if trace:
                command = [_tool("strace", "strace"), *_strace(trace_file, trace), *command]
            with open(Path(self._tmp.name) / "output.log", "w+b") as output:
                child = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    start_new_session=True,
                )
                try:
                    code, overflowed = _wait(child, timeout_s, trace_file if trace else None)
                finally:
                    processes.kill_tree(child.pid)
                    child.wait()
                output.seek(0)
                text = output.read()[-20000:].decode(errors="replace")
            report.seek(0)
            lines = _read_trace(trace_file) if trace else []
            _check_started(text, trace, lines)
            return Outcome(code, text, report.read(), lines, self.scratch, overflowed)

    def _limits(self) -> list[str]:
        limits = self.limits
        return [
            f"--cpu={limits.cpu_s}",
            f"--as={limits.memory}",
            f"--fsize={limits.file_size}",
            f"--nofile={limits.open_files}",
            f"--nproc={limits.processes}",
        ]

    def _mounts(self, env: dict[str, str] | None) -> list[str]:
        args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        args += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        for path in self.covered:
            if path.is_dir() and not path.is_symlink() and path != Path("/"):
                args += ["--tmpfs", str(path)]
        args += ["--bind", str(self.scratch), str(INSIDE)]
        for path in _interpreter_paths():  # where a covered folder or /tmp holds them
            if any(path.is_relative_to(c) for c in [*self.covered, INSIDE]) and path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in self.hide:
            if path.is_dir() and not path.is_symlink() and path != Path("/"):
                args += ["--tmpfs", str(path)]
            elif path.exists():
                args += ["--ro-bind", "/dev/null", str(path)]
        for path in self.readable:
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in self.hide:  # a hidden place inside a folder bound back stays hidden
            if path.is_dir() and any(path.is_relative_to(r) for r in self.readable):
                args += ["--tmpfs", str(path)]
        args += ["--chdir", str(INSIDE / "work")]
        args += ["--clearenv"]
        settled = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(INSIDE / "home"),
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            # An operator's CPU caps hold inside too: threads spinning on busy cores
            # slowed a check's torch several times over.
            **{k: os.environ[k] for k in THREAD_CAPS if k in os.environ},
            **(env or {}),
        }
        for key, value in settled.items():
            args += ["--setenv", key, value]
        return args

    @contextlib.contextmanager
    def _pids(self) -> Iterator[list[str]]:
        """A ``pids`` cgroup for one run where root may make one: the command joins it
        first. Elsewhere nothing (the process limit and the PID namespace remain)."""
        group = _new_pids_group(self.limits.processes)
        if group is None:
            yield []
            return
        try:
            yield ["/bin/sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]
        finally:
            for _ in range(50):  # busy while the killed tree's last exits settle
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _new_pids_group(limit: int) -> Path | None:
    if os.geteuid() != 0:
        return None
    for root in PIDS_CGROUPS:
        maximum = "pids.max"
        if not (root / "cgroup.procs").exists():
            continue
        if root == PIDS_CGROUPS[1] and "pids" not in _read(root / "cgroup.subtree_control"):
            continue
        group = root / f"loopline-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
            (group / maximum).write_text(str(limit))
            return group
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _interpreter_paths() -> list[Path]:
    """What running this interpreter and its packages needs, in case a hidden folder holds
    it (a pyenv Python under /root, a virtual environment under the home)."""
    paths = {sys.base_prefix, sys.prefix, *(p for p in sys.path if p and Path(p).is_dir())}
    import loopline

    paths.add(str(Path(loopline.__file__).resolve().parent.parent))
    return [Path(p) for p in sorted(paths)]


def _strace(trace_file: Path, calls: Iterable[str]) -> list[str]:
    # "?": a call this architecture lacks is skipped, not an error.
    return [
        "-f",
        "-qq",
        "-ttt",
        "--seccomp-bpf",
        "-s",
        "200",
        "-e",
        "trace=" + ",".join(f"?{call}" for call in sorted(calls)),
        "-e",
        "signal=none",
        "-o",
        str(trace_file),
    ]


def _check_started(output: str, trace, lines: list[str]) -> None:
    """Fail closed when the sandbox itself could not start: nothing ran unconfined."""
    first = output.strip().splitlines()[0] if output.strip() else ""
    if first.startswith(("bwrap:", "prlimit:")):
        raise SandboxUnavailable(
            f"the sandbox could not start ({first}); it needs user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1 where that exists, or run as root)"
        )
    if trace and not lines:
        raise SandboxUnavailable(
            f"strace could not watch the sandbox ({first or 'no output'}); it needs ptrace, "
            "which some container runtimes forbid (docker run --cap-add SYS_PTRACE)"
        )


def _wait(child: subprocess.Popen, timeout_s: float, trace: Path | None) -> tuple:
    """(exit code or None at the timeout, whether the trace outgrew ``MAX_TRACE``): the
    tracer writes on this machine's disk, outside the child's limits, so it is watched."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return child.wait(timeout=0.5), False
        except subprocess.TimeoutExpired:
            if trace is not None and trace.exists() and trace.stat().st_size > MAX_TRACE:
                return None, True
            if time.monotonic() > deadline:
                return None, False


def _read_trace(path: Path) -> list[str]:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_TRACE).decode(errors="replace").splitlines()
    except OSError:
        return []


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SandboxUnavailable(
            f"{name} is not installed, and submitted code runs only in a sandbox; install "
            f"it (apt-get install {package}) or run `make sandbox`"
        )
    return found
