"""Environments for components that declare packages (``packages_to_install``,
``pip_index_urls``): one per requirement set, made once and reused.

On Kubeflow such a component pip-installs its packages into its container when it
starts. Here that would change loopline's own environment, so each requirement set gets
a virtual environment under ``LOOPLINE_HOME/envs/<hash>``, made with uv:

- uv resolves and installs from its cache in about a second, and installs into an
  environment it is pointed at, without a pip seeded into every environment;
- the environment holds the component's packages and their dependencies, and sees
  loopline's own packages after its own (a ``.pth`` file), so the KFP executor that runs
  the component is there without installing kfp again;
- a ``.ready`` marker is written last: a second run with the same requirements, or a
  concurrent one (a file lock), finds the environment ready at once.

A component without packages keeps the fast path: it runs in a warm pool worker.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from loopline.core.errors import LooplineError

ENVS = "envs"
READY = ".ready"
KFP_ITSELF = ("kfp", "typing-extensions")  # the executor comes from loopline's own kfp


@dataclass(frozen=True)
class Requirements:
    packages: tuple[str, ...]
    index_urls: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.packages)

    @property
    def key(self) -> str:
        text = json.dumps([sys.version_info[:2], self.packages, self.index_urls])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def requirements(command: list[str]) -> Requirements:
    """What a lightweight component's command pip-installs before it runs, less kfp."""
    script = next((part for part in command if "pip install" in part), "")
    packages, urls = [], []
    for segment in script.split("&&"):
        if "pip install" not in segment:
            continue
        words = shlex.split(segment.split("pip install", 1)[1])
        for i, word in enumerate(words):
            if word in ("--index-url", "--extra-index-url") and i + 1 < len(words):
                urls.append(words[i + 1])
            elif word.startswith("-") or (i > 0 and words[i - 1] in _VALUED):
                continue  # an option, or an option's value
            elif _name(word) not in KFP_ITSELF:
                packages.append(word)
    return Requirements(tuple(packages), tuple(dict.fromkeys(urls)))


def _name(requirement: str) -> str:
    try:
        return Requirement(requirement).name.lower()
    except InvalidRequirement:  # a URL or a path: not kfp
        return requirement


_VALUED = {"--index-url", "--extra-index-url", "--trusted-host", "-i", "-c", "-r", "--target"}


class InstallError(LooplineError, RuntimeError):
    """uv could not install a component's packages; the message names them."""


def python_for(home: Path, wanted: Requirements, *, wheels_only: bool = False) -> Path:
    """The interpreter of ``wanted``'s environment, made on first use. ``wheels_only``
    for code nobody trusts yet (the catalog's check): a source package's build runs its
    own code, here, outside any sandbox; a wheel's install runs none."""
    folder = home / ENVS / wanted.key
    python = folder / "bin" / "python"
    if (folder / READY).exists():
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{wanted.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker; the others wait and reuse it
        if not (folder / READY).exists():
            _make(folder, wanted, wheels_only)
    return python


def _make(folder: Path, wanted: Requirements, wheels_only: bool) -> None:
    from uv import find_uv_bin

    uv = find_uv_bin()
    # uv's cache and data (credentials) under the home, not ~/.cache and ~/.local/share;
    # none of loopline's settings (a database URL, keys): an install needs none.
    env = {
        "UV_CACHE_DIR": str(folder.parent / ".uv-cache"),
        "XDG_DATA_HOME": str(folder.parent / ".uv-data"),
        **{k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")},
    }
    _uv(
        [uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(folder)],
        wanted,
        env,
    )
    python = folder / "bin" / "python"
    indexes = []
    for n, url in enumerate(wanted.index_urls):
        indexes += ["--index-url" if n == 0 else "--extra-index-url", url]
    _uv(
        [uv, "pip", "install", "--quiet", "--python", str(python), *indexes]
        + (["--no-build"] if wheels_only else [])
        + list(wanted.packages),
        wanted,
        env,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # After the environment's own packages: loopline's (kfp, its executor, the project).
    own = sysconfig.get_path("purelib")
    (site / "zz_loopline.pth").write_text(f"import site; site.addsitedir({own!r})\n")
    (folder / READY).write_text(
        json.dumps({"packages": wanted.packages, "index_urls": wanted.index_urls})
    )


def _uv(command: list[str], wanted: Requirements, env: dict[str, str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise InstallError(f"installing {', '.join(wanted.packages)} failed:\n{detail}")


def run_in_env(python: Path, call, env: dict[str, str]) -> None:
    """Run a lightweight component call (:class:`component_runtime.PythonCall`) with
    ``python``, as KFP's container command would; its output goes to the task's log."""
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        module = Path(tmp) / "component.py"
        module.write_text(call.source)
        command = [
            str(python),
            "-m",
            "kfp.dsl.executor_main",
            "--component_module_path",
            str(module),
            "--executor_input",
            json.dumps(call.executor_input),
            "--function_to_execute",
            call.function,
        ]
        log = None
        if call.log_path:
            Path(call.log_path).parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(call.log_path, "ab"))
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        why = f"signal {-code}" if code < 0 else f"code {code}"
        raise RuntimeError(f"the component exited with {why}{_last_line(call.log_path)}")


def _last_line(log_path: str | None) -> str:
    """The last line the component wrote (its exception, usually), for the message."""
    if not log_path or not Path(log_path).exists():
        return ""
    with open(log_path, "rb") as handle:
        handle.seek(max(0, Path(log_path).stat().st_size - 4096))
        lines = handle.read().decode(errors="replace").strip().splitlines()
    return f": {lines[-1][:300]}" if lines else ""
