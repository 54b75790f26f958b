"""What a component's import did to the machine, read from the outside.

The sandbox (:mod:`loopline.core.sandbox`) traces the probe with ``strace``; the probe
opens a marker path, unique to the run, just before it imports the file. Every traced
call after the marker, in any process or thread of the tree, is the file's doing or
later, and is judged here: the file cannot hide a call from ptrace, switch the watcher
off or rewrite what it reports, as it could an audit hook in its own interpreter.
"""

from __future__ import annotations

import re

WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
PROCESSES = {"execve", "execveat", "fork", "vfork"}
CLONES = {"clone", "clone3"}
NETWORK = {"socket", "connect", "bind", "sendto", "sendmsg", "sendmmsg"}
SIGNALS = {"kill", "tkill", "tgkill", "pidfd_send_signal", "rt_sigqueueinfo"}
OPENS = {"open", "openat", "openat2", "creat"}
CHANGES = {
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
    "chmod",
    "fchmodat",
    "chown",
    "lchown",
    "fchownat",
    "mknod",
    "mknodat",
    # through a descriptor opened before the import, or around the calls above
    "ftruncate",
    "fallocate",
    "fchmod",
    "fchown",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "io_uring_setup",
}
TRACED = PROCESSES | CLONES | NETWORK | SIGNALS | OPENS | CHANGES  # what the sandbox traces
# "PID SECONDS.MICROS call(arguments..." (a call another thread interrupted ends in
# "<unfinished ...>"; its "<... resumed>" line is the same call again, and skipped)
_CALL = re.compile(r"^\d+\s+[\d.]+\s+(\w+)\((.*)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def effects_after(trace: list[str], marker: str) -> list[str]:
    """The effects in ``trace`` after the line that opens ``marker``, described."""
    start = next((i for i, line in enumerate(trace) if _opens(line, marker)), None)
    if start is None:
        return []
    found = []
    for line in trace[start + 1 :]:
        match = _CALL.match(line)
        if match is None:
            continue
        call, arguments = match.groups()
        if effect := describe(call, arguments):
            found.append(effect)
    return list(dict.fromkeys(found))


def _opens(line: str, path: str) -> bool:
    match = _CALL.match(line)
    return bool(match and match.group(1) in OPENS and f'"{path}"' in match.group(2))


def describe(call: str, arguments: str) -> str | None:
    """One traced call, in words; None when it does not act on the machine."""
    shown = _first_path(arguments)
    if call in PROCESSES:
        return f"starts a process ({call} {shown})"
    if call in CLONES:
        return None if "CLONE_THREAD" in arguments else f"starts a process ({call})"
    if call in NETWORK:
        if call == "socket" and arguments.startswith(("AF_UNIX", "AF_LOCAL")):
            return None  # a local socket pair reaches nothing until it connects
        return f"network access ({call} {arguments[:80]})"
    if call in SIGNALS:
        return f"signals a process ({call} {arguments[:40]})"
    if call in OPENS:
        writes = call == "creat" or any(f in arguments for f in WRITE_FLAGS)
        return f"writes a file ({shown})" if writes else None
    if call in CHANGES:
        return f"changes files ({call} {shown})"
    return None


def _first_path(arguments: str) -> str:
    quoted = _QUOTED.search(arguments)
    return quoted.group(1)[:160] if quoted else arguments[:60]
