"""``loopline run``'s engine on one machine: the DAG in this process, recorded in the home's
Prefect server through its REST API, without importing Prefect.

A warm home's run is recorded live (:class:`run_history.Recording`): a flow run, Running
from the start, with a task run per task and its states, artifacts and log lines. A run
that finds the server not up (a new home, or one whose server stopped when idle) goes at
once too, and the supervisor records it once the server answers (:func:`run_history.defer`);
so does a live run whose server stopped answering. Either way the same DAG, task
processes, cache and ``set_retry`` policies as under Prefect. Importing Prefect alone took
0.8-1.4 s, more than a one-task run's own work; the Prefect engine
(:mod:`loopline.pipelines.local.prefect_engine`) remains what scheduled runs and an
exported ``PREFECT_API_URL`` use.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from loopline.core.settings import Settings
from loopline.pipelines.local import component_runtime, prefect_server, run_history
from loopline.pipelines.local.cache import TaskCache
from loopline.pipelines.local.plain_engine import PlainEngine
from loopline.pipelines.local.prefect_engine import retry_policy
from loopline.pipelines.local.results import RunListener, RunResult, TaskRecord

# (task name, attempt that failed, its error): the wait before the next attempt begins
OnRetry = Callable[[str, int, BaseException], None]
# (task name, attempt about to run): the wait is over
OnResume = Callable[[str, int], None]


class RecordedEngine(PlainEngine):
    """``api_url``: the home's server, up, to record each run in as it goes; None: the
    supervisor records the run once the server it is starting answers."""

    def __init__(
        self,
        settings: Settings,
        api_url: str | None = None,
        *,
        listener: RunListener | None = None,
        capture_output: bool = True,
    ):
        between = settings.logs / component_runtime.WORKERS_LOG if capture_output else None
        super().__init__(
            settings,
            runtime=component_runtime.ProcessPool(between_tasks=between),
            task_wrapper=retrying,
            listener=listener,
            capture_output=capture_output,
        )
        self.api_url = api_url

    def run(
        self, source: object, arguments: dict | None = None, *, enable_cache: bool = True
    ) -> RunResult:
        arguments = arguments or {}
        self.cache = TaskCache(self.settings.home / "cache") if enable_cache else None
        self.runtime.warm()
        started = time.time()
        key = run_history.new_key()
        # Leased: the server stays up, however long this run, to record it.
        with prefect_server.lease(self.settings):
            if self.api_url is None:
                result = super().run(source, arguments)
            else:
                result = self._run_recorded(source, arguments, key)
            if result.flow_run_id is None:  # the supervisor records it
                run_history.defer(self.settings.prefect_home, result, arguments, started, key=key)
        return result

    def _run_recorded(self, source: object, arguments: dict, key: str) -> RunResult:
        events = _Events(self.listener)
        run = self.prepare(
            source,
            arguments,
            listener=events,
            task_wrapper=lambda name, spec, fn: retrying(
                name,
                spec,
                _publishing(name, fn, events),
                on_retry=events.retrying,
                on_resume=events.resumed,
            ),
        )
        events.recording = run_history.Recording(
            self.api_url, key=key, flow=run.ir.name, name=run.run_name, parameters=arguments
        )
        with _logs_to(events.recording):
            try:
                result = self.execute(run, arguments)
            except BaseException as error:  # Ctrl-C, or a bug: never left Running
                events.recording.abandon(error)
                raise
        if events.recording.finish(result):
            result.flow_run_id = events.recording.flow_run_id
        return result


class _Events:
    """The run's listener: tells the caller's listener and the recording."""

    def __init__(self, listener: RunListener | None):
        self.listener = listener
        self.recording: run_history.Recording | None = None

    def task_started(self, name: str, folder: Path) -> None:
        self.recording.task_started(name)
        if self.listener:
            self.listener.task_started(name, folder)

    def task_finished(self, record: TaskRecord) -> None:
        self.recording.task_finished(record)
        if self.listener:
            self.listener.task_finished(record)

    def retrying(self, name: str, attempt: int, error: BaseException) -> None:
        self.recording.task_retrying(name, attempt, error)

    def resumed(self, name: str, attempt: int) -> None:
        self.recording.task_resumed(name, attempt)


def _publishing(name: str, fn, events: _Events):
    def leaf(*args):
        outputs = fn(*args)
        if not outputs.from_cache:  # published when they were made
            events.recording.task_made(name, outputs.artifacts)
        return outputs

    return leaf


def retrying(
    name: str,
    task_spec: dict,
    fn,
    *,
    on_retry: OnRetry | None = None,
    on_resume: OnResume | None = None,
):
    """The task's ``set_retry`` policy, kept as Prefect keeps it: retried after each wait.
    As Prefect's engine, ``on_retry`` before the wait (AwaitingRetry shows during it) and
    ``on_resume`` once it is over (Retrying)."""
    retries, delays = retry_policy(task_spec)
    if not retries:
        return fn

    def leaf(*args):
        for attempt in range(retries + 1):
            if attempt and on_resume:
                on_resume(name, attempt + 1)
            try:
                return fn(*args)
            except Exception as exc:
                if attempt == retries:
                    raise
                if on_retry:
                    on_retry(name, attempt + 1, exc)
                time.sleep(delays[min(attempt, len(delays) - 1)])

    return leaf


class _Handler(logging.Handler):
    def __init__(self, recording: run_history.Recording):
        super().__init__(logging.INFO)
        self.recording = recording

    def emit(self, record: logging.LogRecord) -> None:
        self.recording.log(record)


@contextlib.contextmanager
def _logs_to(recording: run_history.Recording) -> Iterator[None]:
    """loopline's own log lines (cache hits, skips, warnings) in the flow run's logs too, as
    the Prefect engine sends them; they also reach the root logger's handler."""
    logger = logging.getLogger("loopline")
    handler = _Handler(recording)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
