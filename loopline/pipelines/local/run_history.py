"""Runs that finished before their home's Prefect server was up, recorded in it afterwards.

A new home's first run should not wait 10-50 s for a Prefect server to create and migrate
its database (kfp.local needs none). So a run that finds no server running starts one in
the background and runs at once (:mod:`loopline.pipelines.local.deferred_engine`); what
it did is kept as a pending record under ``PREFECT_HOME/pending/``. The home's supervisor
records each one in its server once the server answers (:func:`import_pending`): the flow
run with its parameters and final state, and a task run per task, so the run history is
Prefect's whichever way a run went. Prefect stamps states when they are set, so the real
times are in each state's message.

Through the REST API only (httpx, no Prefect import): the supervisor stays light. Each
record carries an idempotency key, and its task runs ids derived from it, so a record
tried twice (a supervisor killed mid-import) is recorded once.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from loopline.pipelines.local.results import RunResult, Status, TaskRecord

PENDING = "pending"
_STATES = {Status.SUCCEEDED: "COMPLETED", Status.FAILED: "FAILED", Status.SKIPPED: "COMPLETED"}


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


def defer(prefect_home: Path, result: RunResult, parameters: dict, started: float) -> Path:
    """Keep ``result`` for the home's server to record; the record's path."""
    record = PendingRun(
        key=str(uuid.uuid4()),
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
    a server error or no answer leaves the rest for the next try."""
    done = 0
    with httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30) as api:
        for path in pending(prefect_home):
            try:
                _record(api, PendingRun(**json.loads(path.read_text())))
            except (ValueError, TypeError) as exc:  # unreadable JSON, or not a record
                _set_aside(path, repr(exc))
                continue
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code >= 500:
                    raise
                _set_aside(path, f"{exc.response.status_code}: {exc.response.text[:2000]}")
                continue
            path.unlink()
            done += 1
    return done


def _set_aside(path: Path, why: str) -> None:
    refused = path.parent / "refused"
    refused.mkdir(exist_ok=True)
    os.replace(path, refused / path.name)
    (refused / f"{path.stem}.why").write_text(why + "\n")


def _record(api: httpx.Client, run: PendingRun) -> None:
    flow_id = _post(api, "flows/", json={"name": run.flow})["id"]
    flow_run = _post(
        api,
        "flow_runs/",
        json={
            "flow_id": flow_id,
            "name": run.name,
            "parameters": run.parameters,
            "idempotency_key": run.key,
            "tags": ["loopline", "recorded-after-run"],
            "state": {"type": "RUNNING", "message": _when(run.started, run.ended)},
        },
    )
    for task in run.tasks:
        # Prefect's create is an upsert by id: a record tried again adds no second task run.
        _post(
            api,
            "task_runs/",
            json={
                "id": str(uuid.uuid5(uuid.UUID(run.key), task["name"])),
                "flow_run_id": flow_run["id"],
                "name": task["name"],
                "task_key": task["name"],
                "dynamic_key": "0",
                "state": _task_state(task),
            },
        )
    final = "COMPLETED" if run.succeeded else "FAILED"
    message = _when(run.started, run.ended) + (f"; {run.error}" if run.error else "")
    state = {"type": final, "message": message[:2000]}
    _post(api, f"flow_runs/{flow_run['id']}/set_state", json={"state": state, "force": True})


def _task_state(task: dict) -> dict:
    status = Status(task["status"])
    name = "Cached" if task["cached"] else ("Skipped" if status is Status.SKIPPED else None)
    state = {"type": _STATES[status], "message": f"took {task['seconds']:.2f} s"}
    return {**state, "name": name} if name else state


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


def _post(api: httpx.Client, path: str, *, json: dict) -> dict:
    """POST, tried again on a 503: Prefect's server answers so while its database is busy
    (a loaded machine), and that passes in moments."""
    for wait in (0.5, 1, 2, 4, 8, None):
        response = api.post(path, json=json)
        if response.status_code != 503 or wait is None:
            response.raise_for_status()
            return response.json()
        time.sleep(wait)
    raise AssertionError("unreachable")


def _jsonable(parameters: dict) -> dict:
    return json.loads(json.dumps(parameters, default=str))
