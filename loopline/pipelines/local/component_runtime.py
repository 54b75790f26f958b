"""Where component code runs on one machine: a pool of worker processes, or in-process.

Lightweight Python components run their function from the source embedded in the IR,
through KFP's own ``Executor`` (the code ``kfp.dsl.executor_main`` runs in a container),
so nothing is pip-installed. The default is a process pool: a task's environment
variables, crashes and global state stay in its worker, and a warm worker keeps heavy
imports (torch, ray) loaded for the next task. ``benchmarks/orchestration`` measures it
against in-process execution.

Container components run their command as a subprocess, and only with the platform
image, since that image is this environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import multiprocessing
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from threading import BoundedSemaphore, Lock
from typing import Protocol

from loopline.core.errors import LooplineError
from loopline.pipelines.ir import EXECUTOR_MODULE


@dataclass(frozen=True)
class PythonCall:
    source: str
    function: str
    executor_input: dict
    env: dict[str, str]
    log_path: str | None = None  # the task's stdout and stderr go here when set
    exact_env: bool = False  # env is the task's whole environment, not additions


def python_call(
    command: list[str], args: list[str], executor_input: dict, env: dict, *, log_path=None
) -> PythonCall:
    """The component source and function name from a lightweight component's command."""
    if not any(EXECUTOR_MODULE in part for part in command):
        raise ValueError("not a lightweight Python component")
    function = args[args.index("--function_to_execute") + 1]
    return PythonCall(command[-1], function, executor_input, env, log_path)


def run_in_this_process(call: PythonCall) -> None:
    environment = _exactly if call.exact_env else _adding
    with _output_to(call.log_path), environment(call.env), tempfile.TemporaryDirectory() as tmp:
        name = f"loopline_component_{uuid.uuid4().hex}"
        path = Path(tmp) / f"{name}.py"
        path.write_text(call.source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            component = getattr(module, call.function)
            _executor()(executor_input=call.executor_input, function_to_execute=component).execute()
        except SystemExit as exc:  # on Kubeflow a failed task; here it must not end the flow
            if exc.code not in (0, None):
                traceback.print_exc()
                raise ComponentExit(f"the component exited with code {exc.code}") from None
        except BaseException:
            traceback.print_exc()  # the whole story goes to the task's log
            raise
        finally:
            sys.modules.pop(name, None)


def _executor() -> type:
    """KFP's executor, whose return type check names the output and the value."""
    from kfp.dsl.executor import Executor, is_parameter

    class Checked(Executor):
        def handle_single_return_value(self, output_name, annotation_type, return_value):
            wanted = getattr(annotation_type, "__origin__", None) or annotation_type
            allowed = (int, float) if wanted is float else wanted
            if is_parameter(annotation_type) and not isinstance(return_value, allowed):
                raise ValueError(
                    f"output {output_name} is declared {_name(annotation_type)}, but the "
                    f"component returned {return_value!r}, of type "
                    f"{type(return_value).__name__}; return that type, or declare the one "
                    f"it returns"
                )
            super().handle_single_return_value(output_name, annotation_type, return_value)

    return Checked


def _name(annotation: object) -> str:
    """``int``, ``List[int]``: a return annotation as it was written."""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


@contextlib.contextmanager
def _output_to(path: str | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so native code and
    child processes too) to ``path`` for the duration of one task."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextlib.contextmanager
def _exactly(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _adding(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


WORKERS_LOG = "component-workers.log"


class Runtime(Protocol):
    """Where a lightweight component's call runs; both runtimes below implement it."""

    def run(self, call: PythonCall) -> None:
        """Run ``call`` to its end; a failure of the component raises."""

    def warm(self) -> None:
        """Get ready ahead of the first call (start workers), or do nothing."""

    def shutdown(self) -> None:
        """Stop whatever the runtime started."""


class ComponentExit(LooplineError, RuntimeError):
    """A component called ``sys.exit`` with a failure code."""


def _output_between_tasks(path: str) -> None:
    """A pool worker's output outside its tasks goes to ``path``, not the terminal: Ray's
    log monitor, for one, prints a finished training's late lines (its controller's
    shutdown) after the task has handed the terminal back."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


# kfp's executor, without kfp's API client (kfp_sdk): 0.3 s to import instead of 1 s.
FORKSERVER_PRELOAD = ["__main__", "loopline.pipelines.local.kfp_sdk"]


def start_forkserver() -> None:
    """Start the server the pool's workers fork from, now: its import of kfp (0.3 s)
    overlaps the caller's own start-up (importing kfp too, loading the pipeline) on a
    second core, instead of following it. The pool uses this server when it starts."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    multiprocessing.forkserver.ensure_running()


class ProcessPool:
    """Worker processes that run one component call at a time each, at most ``workers``
    at once. A call goes to an idle worker, the one that ran last (its imports loaded,
    warmest); a new worker starts only when every worker is busy, so a chain of tasks
    runs in one process and imports torch and MLflow once. (One ProcessPoolExecutor of
    N workers started a second worker for a chain: it counts a worker idle only after the
    finished task's future is set, and the next task came first.) A worker that dies
    fails its own task only, and is replaced. With ``between_tasks``, a worker's output
    outside its tasks goes there."""

    def __init__(self, workers: int | None = None, between_tasks: Path | None = None):
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.between_tasks = between_tasks
        self._lock = Lock()
        self._slots = BoundedSemaphore(self.workers)
        self._idle: list[ProcessPoolExecutor] = []  # the last one used at the end
        self._all: list[ProcessPoolExecutor] = []

    def run(self, call: PythonCall) -> None:
        # A worker was forked with the environment of the pool's first use; the task gets
        # the caller's environment of now (LOOPLINE_HOME, the settings), plus its own.
        call = dataclasses.replace(call, env={**os.environ, **call.env}, exact_env=True)
        with self._slots:
            worker, done = self._submit(call)
            try:
                done.result()  # a failed component raises here; its worker stays good
            except BrokenProcessPool:
                self._discard(worker)
                raise RuntimeError(
                    "the worker process running this component died (killed, out of memory "
                    "or crashed in native code)"
                ) from None
            finally:
                with self._lock:
                    if worker in self._all:  # neither dead nor shut down meanwhile
                        self._idle.append(worker)

    def warm(self) -> None:
        """Start a worker now, so that its start-up (importing kfp) overlaps the caller's
        own work instead of delaying the first task."""
        with self._lock:
            if not self._all:
                worker = self._new_worker()
                worker.submit(int)  # the first task queues behind it, in the same process
                self._idle.append(worker)

    def _submit(self, call: PythonCall) -> tuple[ProcessPoolExecutor, Future]:
        with self._lock:
            worker = self._idle.pop() if self._idle else self._new_worker()
        try:
            return worker, worker.submit(run_in_this_process, call)
        except BrokenProcessPool:  # it died while idle: the task has not run yet
            self._discard(worker)
            with self._lock:
                worker = self._new_worker()
            return worker, worker.submit(run_in_this_process, call)

    def _new_worker(self) -> ProcessPoolExecutor:
        # forkserver: workers fork from a clean, single-threaded server that has kfp
        # loaded. As with any multiprocessing, a script that runs pipelines needs an
        # `if __name__ == "__main__":` guard.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(FORKSERVER_PRELOAD)
        quiet = self.between_tasks is not None
        worker = ProcessPoolExecutor(
            1,
            mp_context=context,
            initializer=_output_between_tasks if quiet else None,
            initargs=(str(self.between_tasks),) if quiet else (),
        )
        self._all.append(worker)
        return worker

    def _discard(self, worker: ProcessPoolExecutor) -> None:
        with self._lock:
            if worker in self._all:  # shutdown() may have taken it already
                self._all.remove(worker)
        worker.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.shutdown(cancel_futures=True)


class InProcess:
    """Runs component calls on the calling thread (benchmarks; no isolation). Output stays
    on the terminal: redirecting it would capture every thread of the process."""

    def run(self, call: PythonCall) -> None:
        run_in_this_process(dataclasses.replace(call, log_path=None))

    def warm(self) -> None: ...

    def shutdown(self) -> None: ...


def run_container(
    command: list[str], env: dict[str, str], cwd: Path, log_path: str | None = None
) -> None:
    """A platform-image container component's command, run as a local subprocess; its
    output goes to ``log_path`` (or to this process's output)."""
    command = [sys.executable if part == "python3" else part for part in command]
    with open(log_path, "ab") if log_path else contextlib.nullcontext() as log:
        result = subprocess.run(
            command, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.PIPE
        )
    stderr = result.stderr.decode(errors="replace")
    if log_path:
        with open(log_path, "a") as log:
            log.write(stderr)
    else:
        sys.stderr.write(stderr)
    if result.returncode != 0:
        raise RuntimeError(f"command exited with {result.returncode}: {stderr.strip()[-2000:]}")


class NewProcess:
    """Runs each component call in a new process of this interpreter, as KFP's container
    command would (``kfp.dsl.executor_main``): the catalog's sandboxed example, where the
    code that reports the run must not share a process with the component."""

    def run(self, call: PythonCall) -> None:
        from loopline.pipelines.local.component_envs import run_in_env

        run_in_env(Path(sys.executable), call, {**os.environ, **call.env})

    def warm(self) -> None: ...

    def shutdown(self) -> None: ...
