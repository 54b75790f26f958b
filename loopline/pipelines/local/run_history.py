"""Runs this machine executed itself, recorded in the home's Prefect server without Prefect.

A run on one machine goes without importing Prefect (0.8-1.4 s, more than a one-task
run's own work) and without waiting for a server (10-50 s for a new home's first start):
:mod:`loopline.pipelines.local.recorded_engine` runs the DAG, and what it does is
recorded here, through the REST API (:mod:`loopline.pipelines.local.prefect_rest`):

- **live** (:class:`Recording`), when the home's server is up: the flow run is created
  Running as the run starts, with its parameters and tags; each task run as its task
  starts, then moved to Completed, Cached, Failed or Skipped (AwaitingRetry between
  attempts), with its metrics tables and report links as artifacts and loopline's log
  lines. A background thread posts, so the run never waits for the server;
- **afterwards**, when the server is not up yet, or stopped answering mid-run: the run is
  kept under ``PREFECT_HOME/pending/`` (:func:`defer`), and the home's supervisor records
  it once the server answers (:func:`import_pending`): the flow run with its parameters
  and final state, a task run per task, tagged ``recorded-after-run``. Prefect stamps
  states when they are set, so the real times are in each state's message.

Each run has a key; the flow run's idempotency key and every task run's id derive from
it, so a run recorded twice (partly live, then from its record; or by a supervisor killed
mid-import) is one flow run with one task run per task.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loopline.pipelines.local import prefect_rest
from loopline.pipelines.local.prefect_rest import PrefectApi, PrefectApiError
from loopline.pipelines.local.results import RunResult, Status, TaskRecord

PENDING = "pending"
LIVE_TAGS = ["loopline"]
AFTER_TAGS = ["loopline", "recorded-after-run"]
_STATES = {Status.SUCCEEDED: "COMPLETED", Status.FAILED: "FAILED", Status.SKIPPED: "COMPLETED"}
# How long the end of a run waits for its live recording to catch up before it leaves the
# rest to the supervisor (a pending record); a healthy local server takes milliseconds.
FINISH_TIMEOUT_S = 20.0

log = logging.getLogger("loopline.run")


@dataclass
class PendingRun:
    key: str  # the flow run's idempotency key
    flow: str
    name: str
    parameters: dict
    succeeded: bool
    error: str | None
    started: float  # epoch seconds
    ended: float
    tasks: list[dict] = field(default_factory=list)  # name, status, cached, seconds


def new_key() -> str:
    return str(uuid.uuid4())


def defer(
    prefect_home: Path,
    result: RunResult,
    parameters: dict,
    started: float,
    *,
    key: str | None = None,
) -> Path:
    """Keep ``result`` for the home's server to record; the record's path. ``key``: the
    run's, when a live recording of it began."""
    record = PendingRun(
        key=key or new_key(),
        flow=result.pipeline,
        name=result.run_name,
        parameters=_jsonable(parameters),
        succeeded=result.succeeded,
        error=result.error,
        started=started,
        ended=time.time(),
        tasks=[_task(r) for r in result.records],
    )
    folder = prefect_home / PENDING
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.key}.json"
    partial = folder / f".{record.key}.partial"  # never read half-written
    partial.write_text(json.dumps(asdict(record)))
    os.replace(partial, path)
    return path


def pending(prefect_home: Path) -> list[Path]:
    return sorted((prefect_home / PENDING).glob("*.json"))


def import_pending(prefect_home: Path, api_url: str) -> int:
    """Record every pending run in the server at ``api_url``; how many were recorded. A
    record is removed only once recorded. One the server refuses (4xx), or that cannot be
    read, is set aside under ``pending/refused/`` with the reason, so it blocks no other;
    a server error, an answer that is not Prefect's (a 2xx that is not JSON) or no answer
    leaves the rest for the next try."""
    done = 0
    api = PrefectApi(api_url)
    try:
        for path in pending(prefect_home):
            try:
                run = _read(path)
            except (ValueError, TypeError, KeyError) as exc:  # unreadable JSON, or not a record
                _set_aside(path, repr(exc))
                continue
            try:
                _record(api, run)
            except PrefectApiError as exc:
                if exc.transient:
                    raise
                _set_aside(path, f"{exc.status}: {exc.body[:2000]}")
                continue
            path.unlink()
            done += 1
    finally:
        api.close()
    return done


def _read(path: Path) -> PendingRun:
    """A pending record, checked whole before anything of it is sent: what fails past
    this is the server's answer, never the record."""
    run = PendingRun(**json.loads(path.read_text()))
    for task in run.tasks:  # what _record reads of each
        _task_state(task)
        if not isinstance(task["name"], str):
            raise TypeError(f"a task named {task['name']!r}")
    return run


def _set_aside(path: Path, why: str) -> None:
    refused = path.parent / "refused"
    refused.mkdir(exist_ok=True)
    os.replace(path, refused / path.name)
    (refused / f"{path.stem}.why").write_text(why + "\n")


def _record(api: PrefectApi, run: PendingRun) -> None:
    flow_run_id = prefect_rest.create_flow_run(
        api,
        key=run.key,
        flow=run.flow,
        name=run.name,
        parameters=run.parameters,
        tags=AFTER_TAGS,
        first=prefect_rest.state("RUNNING", _when(run.started, run.ended)),
    )
    for task in run.tasks:
        prefect_rest.record_task_run(
            api, run_key=run.key, flow_run_id=flow_run_id, task=task["name"], new=_task_state(task)
        )
    message = _when(run.started, run.ended) + (f"; {run.error}" if run.error else "")
    prefect_rest.set_flow_run_state(api, flow_run_id, _flow_state(run.succeeded, message))


def _flow_state(succeeded: bool, message: str | None) -> dict:
    return prefect_rest.state("COMPLETED" if succeeded else "FAILED", message)


def _task_state(task: dict) -> dict:
    status = Status(task["status"])
    name = "Cached" if task["cached"] else ("Skipped" if status is Status.SKIPPED else None)
    return prefect_rest.state(_STATES[status], f"took {task['seconds']:.2f} s", name)


def _task(record: TaskRecord) -> dict:
    return {
        "name": record.name,
        "status": str(record.status),
        "cached": record.cached,
        "seconds": record.seconds,
    }


def _when(started: float, ended: float) -> str:
    start = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    return f"ran {start} for {ended - started:.2f} s, before this home's Prefect server was up"


def _jsonable(parameters: dict) -> dict:
    """JSON values: strict JSON too, so NaN and infinity become their names ("NaN")."""
    return json.loads(json.dumps(parameters, default=str), parse_constant=str)


# -- live: recorded as it runs -------------------------------------------------------------


class Recording:
    """One run, recorded in the server at ``api_url`` while it runs.

    The engine calls these from the run's threads; each call only queues its requests, and
    one background thread sends them in order, so a slow server delays the record, never
    the run. Once a request fails (the server stopped, or refused), the rest are dropped:
    :meth:`finish` says so, and the engine keeps the run for the supervisor (:func:`defer`
    with this run's key), which completes the same flow run."""

    def __init__(self, api_url: str, *, key: str, flow: str, name: str, parameters: dict):
        self.key = key
        self.flow_run_id: str | None = None
        self.error: BaseException | None = None
        self._api = PrefectApi(api_url)
        self._started: set[str] = set()
        self._logs: list[logging.LogRecord] = []
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._send, name="loopline-recording", daemon=True)
        self._thread.start()
        self._put(
            self._create,
            flow=flow,
            name=name,
            parameters=_jsonable(parameters),
        )

    # the run's events ----------------------------------------------------------------

    def task_started(self, task: str) -> None:
        self._started.add(task)
        self._put(self._task_state, task, prefect_rest.state("RUNNING"), create=True)

    def task_retrying(self, task: str, attempt: int, error: BaseException) -> None:
        """``attempt`` failed: the task waits for its next one (AwaitingRetry)."""
        message = f"attempt {attempt} failed: {type(error).__name__}: {error}"
        self._put(self._task_state, task, prefect_rest.state("SCHEDULED", message, "AwaitingRetry"))

    def task_resumed(self, task: str, attempt: int) -> None:
        """The wait is over: ``attempt`` runs (Retrying), as Prefect's engine posts it."""
        retrying = prefect_rest.state("RUNNING", f"attempt {attempt}", "Retrying")
        self._put(self._task_state, task, retrying)

    def task_made(self, task: str, outputs: dict) -> None:
        """A task's new artifacts (metrics, reports), before it is finished."""
        for artifact in prefect_rest.artifacts(task, outputs):
            self._put(self._artifact, task, artifact)

    def task_finished(self, record: TaskRecord) -> None:
        new = _task_state(_task(record))
        self._put(self._task_state, record.name, new, create=record.name not in self._started)

    def log(self, record: logging.LogRecord) -> None:
        self._logs.append(record)  # sent together at the end: one request

    def finish(self, result: RunResult, timeout: float = FINISH_TIMEOUT_S) -> bool:
        """The flow run's final state; True once everything is recorded, False if some of
        it was not (the caller then defers the run)."""
        message = None if result.succeeded else result.error
        self._put(self._send_logs)
        self._put(self._flow_state, _flow_state(result.succeeded, message))
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.error = self.error or TimeoutError(f"not recorded within {timeout:.0f} s")
        # Closed for good: a request still retrying gives up, none is sent after this, so
        # none overwrites the final states the supervisor records from the deferred run.
        self._api.close()
        if self.error is not None:
            log.info("run %s: recorded in Prefect later (%s)", result.run_name, self.error)
        return self.error is None

    def abandon(self, error: BaseException, timeout: float = 5.0) -> None:
        """The run ended without a result (interrupted, or an error of loopline's own): its
        flow run ends Cancelled or Crashed, as Prefect's engine ends it, not Running."""
        kind = "CANCELLED" if isinstance(error, KeyboardInterrupt) else "CRASHED"
        self._put(self._send_logs)
        self._put(self._flow_state, prefect_rest.state(kind, f"{type(error).__name__}: {error}"))
        self._queue.put(None)
        self._thread.join(timeout)
        self._api.close()

    # the background thread -----------------------------------------------------------

    def _put(self, call: Callable[..., None], *args, **kwargs) -> None:
        self._queue.put(lambda: call(*args, **kwargs))

    def _send(self) -> None:
        while (call := self._queue.get()) is not None:
            if self.error is None:
                try:
                    call()
                except Exception as exc:  # noqa: BLE001 - the run goes on; recorded later
                    self.error = self.error or exc  # finish's timeout, if it came first

    def _create(self, *, flow: str, name: str, parameters: dict) -> None:
        self.flow_run_id = prefect_rest.create_flow_run(
            self._api,
            key=self.key,
            flow=flow,
            name=name,
            parameters=parameters,
            tags=LIVE_TAGS,
            first=prefect_rest.state("RUNNING"),
        )

    def _task_state(self, task: str, new: dict, *, create: bool = False) -> None:
        if create:
            prefect_rest.record_task_run(
                self._api, run_key=self.key, flow_run_id=self.flow_run_id, task=task, new=new
            )
        else:
            task_id = prefect_rest.task_run_id(self.key, task)
            prefect_rest.set_task_run_state(self._api, task_id, new)

    def _artifact(self, task: str, artifact: dict) -> None:
        task_id = prefect_rest.task_run_id(self.key, task)
        prefect_rest.create_artifact(self._api, artifact, self.flow_run_id, task_id)

    def _send_logs(self) -> None:
        entries = [prefect_rest.log_entry(r, self.flow_run_id) for r in self._logs]
        prefect_rest.send_logs(self._api, entries)

    def _flow_state(self, new: dict) -> None:
        prefect_rest.set_flow_run_state(self._api, self.flow_run_id, new)
