"""Start and stop ``bentoml serve`` for loopline's service, as a child process tree.

One helper serves the CLI (`loopline serve`), the demo, the tests and the benchmark, so
they all run the real server the same way. BentoML's workers run in process groups of
their own, so stopping signals the whole tree; the server dies with the process that
started it (even by ``kill -9``), and its workers die with the server (``service.py``).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from loopline.core import processes
from loopline.core.layout import DIGEST_TAG
from loopline.core.package import installed_root
from loopline.core.settings import Settings, SettingsError
from loopline.ml.model_contract import verify_digest
from loopline.serving.restarts import gave_up, journal_folder
from loopline.storage.registry import RegistryError, model_folder, reader

SERVICE = "loopline.serving.service:Predictor"


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path | None
    journal: Path | None = None  # its workers' restart journal (serving/restarts.py)

    def gave_up(self) -> str | None:
        """Why the server stopped itself (its workers kept dying), if it did."""
        return gave_up(self.journal) if self.journal else None

    def wait_ready(self, timeout: float = 120) -> None:
        """Return once ``/readyz`` answers 200, i.e. the model is loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                why = self.gave_up() or f"bentoml serve exited with {self.process.returncode}"
                raise RuntimeError(f"{why}{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise TimeoutError(
            f"the server at {self.url} was not ready in {timeout:.0f} s{self._tail()}"
        )

    def stop(self, timeout: float = 25) -> None:
        """SIGTERM to every server process (the workers flush the prediction log on the
        way out), SIGKILL to any still alive after ``timeout`` seconds."""
        processes.stop_tree(self.process.pid, grace=timeout)
        self.process.wait()
        self._forget()

    def kill(self) -> None:
        """``kill -9`` every process of the server: no shutdown hook runs."""
        processes.kill_tree(self.process.pid)
        self.process.wait()
        self._forget()

    def _forget(self) -> None:
        if self.journal is not None:
            shutil.rmtree(self.journal, ignore_errors=True)

    def _tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "; last log lines:\n" + "\n".join(self.log_path.read_text().splitlines()[-15:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env(
    settings: Settings, extra: dict[str, str] | None = None, **options: str
) -> dict[str, str]:
    """The child's environment: loopline's settings, BentoML's home under LOOPLINE_HOME,
    and ``LOOPLINE_SERVE_*`` options (version, batching, poll_s, ...)."""
    env = dict(os.environ)
    env.update(
        LOOPLINE_HOME=str(settings.home),
        LOOPLINE_TRACKING_URI=settings.tracking_uri,
        LOOPLINE_DATABASE_URL=settings.database_url,
        LOOPLINE_MODEL_NAME=settings.model_name,
        BENTOML_HOME=str(settings.bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
    )
    labels = settings.labels  # who may label: the server's /feedback checks it
    env.update(
        {
            name: value
            for name, value in (
                ("LOOPLINE_LABEL_KEYS", labels.keys),
                ("LOOPLINE_LABEL_KEYS_FILE", labels.keys_file and str(labels.keys_file)),
                ("LOOPLINE_LABEL_REVIEWERS", ",".join(labels.reviewers)),
                ("LOOPLINE_LABEL_CONFLICTS", labels.conflicts),
            )
            if value
        }
    )
    env.update({f"LOOPLINE_SERVE_{k.upper()}": str(v) for k, v in options.items() if v is not None})
    env.update(extra or {})
    return env


def start_server(
    settings: Settings,
    *,
    port: int,
    host: str = "127.0.0.1",
    target: str = SERVICE,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    **options: str,
) -> Server:
    """``bentoml serve`` in its own process group; ``target`` is the service or a Bento tag."""
    executable = str(Path(sys.executable).parent / "bentoml")
    command = [executable, "serve", target, "--host", host, "--port", str(port)]
    command += ["--working-dir", str(installed_root())]
    # uvicorn's drain bound; past it, requests still running are cancelled.
    command += ["--timeout-graceful-shutdown", str(math.ceil(settings.serve.drain_s))]
    output = open(log_path, "ab") if log_path else None  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        command,
        env=serve_env(settings, env, **options),
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,  # Ctrl-C in the terminal reaches loopline, which stops it
        preexec_fn=processes.die_with_parent,
    )
    try:
        journal = journal_folder(settings.home, process.pid)
    except psutil.Error:  # it exited at once; wait_ready reports why
        journal = None
    return Server(process, f"http://{host}:{port}", log_path, journal)


def preflight(settings: Settings, version: str | None) -> bool:
    """Whether there is a model to serve: the pinned ``version``, else a champion. Reads
    only; an unknown pinned version is a usage error, and so is a registered model whose
    files are no longer the registered ones (:class:`ModelTampered`, exit 2)."""
    reads = reader(settings)
    if version is None:
        info = reads.champion(settings.model_name)
    else:
        try:
            info = reads.version(settings.model_name, version)
        except (RegistryError, Exception) as exc:
            raise SettingsError(
                f"--version {version}: model {settings.model_name!r} has no such version "
                f"({exc}); list versions in the MLflow UI or serve the champion"
            ) from None
    if info is not None and DIGEST_TAG in info.tags:
        verify_digest(model_folder(settings, info), info.tags[DIGEST_TAG])
    return info is not None
