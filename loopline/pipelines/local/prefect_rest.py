"""The part of Prefect's REST API that loopline records its runs through, without Prefect.

Importing Prefect costs 0.8-1.4 s of a process, more than a one-task run's own work, so
the runs this machine executes itself (:mod:`loopline.pipelines.local.recorded_engine`)
and the runs recorded after the fact (:mod:`loopline.pipelines.local.run_history`) talk
to the home's server here: a flow, a flow run with its parameters, tags and states, a
task run per KFP task with its states, artifacts and log lines. Standard library only
(``http.client``: httpx alone takes 0.25 s to import), one kept-alive connection.

Every id is derived from the run's key, so a run recorded twice, partly live and then
from its pending record, is one flow run with one task run per task.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import re
import socket
import threading
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.core.errors import LooplineError

log = logging.getLogger("loopline.run")


class PrefectApiError(LooplineError, RuntimeError):
    """The server refused a request, or answered what is no answer: ``status`` is its HTTP
    status."""

    def __init__(self, status: int, body: str, what: str):
        super().__init__(f"Prefect's API answered {status} to {what}: {body[:2000]}")
        self.status = status
        self.body = body

    @property
    def transient(self) -> bool:
        """Worth trying again later: a server error, or a 2xx that is not JSON (a proxy's
        page, a cut answer); only a 4xx says the request itself is wrong."""
        return not 400 <= self.status < 500


class PrefectApi:
    """A client of one Prefect server's REST API (``http://host:port/api``); thread-safe.
    Once closed (:meth:`close`), it sends nothing more."""

    def __init__(self, api_url: str, *, timeout: float = 30):
        parts = urllib.parse.urlsplit(api_url.rstrip("/") + "/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._prefix = parts.path
        self._timeout = timeout
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._closed = threading.Event()

    def post(self, path: str, body: Any, *, idempotent: bool = True) -> Any:
        """POST ``body`` as JSON; the answer's JSON. Tried again on a 503, which Prefect's
        server answers while its database is busy (a loaded machine), having written
        nothing: that passes. ``idempotent=False`` for a request that the server would
        carry out twice if sent twice (Prefect gives logs and artifacts no client-chosen
        id): never sent again once it may have reached the server."""
        for wait in (0.5, 1, 2, 4, 8, None):
            status, text = self._send("POST", path, json.dumps(body, default=str), idempotent)
            if status != 503 or wait is None:
                break
            if self._closed.wait(wait):  # closed meanwhile: the caller gave up on it
                raise _closed(path)
        if status >= 400:
            raise PrefectApiError(status, text, f"POST {path}")
        try:
            return json.loads(text) if text else None
        except ValueError:  # not Prefect's answer: worth another try later, not a refusal
            raise PrefectApiError(status, text, f"POST {path} (an answer not JSON)") from None

    def _send(self, method: str, path: str, body: str, idempotent: bool) -> tuple[int, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        with self._lock:
            if not idempotent:  # a fresh connection, which cannot be stale: no second send
                self._drop()
            for attempt in (1, 2):  # a kept-alive connection the server closed: once more
                if self._closed.is_set():
                    raise _closed(path)
                if self._connection is None:
                    kind = (
                        http.client.HTTPSConnection if self._https else http.client.HTTPConnection
                    )
                    self._connection = kind(self._host, self._port, timeout=self._timeout)
                try:
                    self._connection.request(method, self._prefix + path, body, headers)
                    response = self._connection.getresponse()
                    return response.status, response.read().decode()
                except (http.client.HTTPException, ConnectionError):
                    self._drop()
                    if attempt == 2 or not idempotent or self._closed.is_set():
                        raise
                except OSError:
                    self._drop()
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """For good: a request in flight is cut off, one waiting to try again gives up,
        and none is sent after this returns. A run that stopped waiting for its live
        recording leaves the rest to the supervisor, whose final states a late request of
        this client must not overwrite."""
        self._closed.set()
        # Without the lock (a request in flight holds it for up to its timeout): shutting
        # the socket down wakes the request at once, which then gives up, being closed.
        sock = getattr(self._connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _closed(path: str) -> ConnectionAbortedError:
    return ConnectionAbortedError(f"POST {path}: this Prefect API client was closed")


# -- what loopline records ---------------------------------------------------------------


def state(kind: str, message: str | None = None, name: str | None = None) -> dict:
    """A state to set: ``kind`` is Prefect's type (RUNNING, COMPLETED, FAILED...)."""
    body: dict[str, Any] = {"type": kind}
    if message is not None:
        body["message"] = message[:2000]
    if name is not None:
        body["name"] = name
    return body


def task_run_id(run_key: str, task: str) -> str:
    """The id of task ``task``'s run in the flow run of key ``run_key``."""
    return str(uuid.uuid5(uuid.UUID(run_key), task))


def create_flow_run(
    api: PrefectApi, *, key: str, flow: str, name: str, parameters: dict, tags: list, first: dict
) -> str:
    """The flow run of key ``key`` (created once, whoever asks again), in state ``first``."""
    flow_id = api.post("flows/", {"name": flow})["id"]
    body = {
        "flow_id": flow_id,
        "name": name,
        "parameters": parameters,
        "idempotency_key": key,
        "tags": tags,
        "state": first,
    }
    return api.post("flow_runs/", body)["id"]


def set_flow_run_state(api: PrefectApi, flow_run_id: str, new: dict) -> None:
    api.post(f"flow_runs/{flow_run_id}/set_state", {"state": new, "force": True})


def record_task_run(
    api: PrefectApi, *, run_key: str, flow_run_id: str, task: str, new: dict
) -> str:
    """Task ``task``'s run in ``new`` state: created, or moved there if it exists (Prefect
    answers a second create with the first one, as it was)."""
    task_id = task_run_id(run_key, task)
    answer = api.post(
        "task_runs/",
        {
            "id": task_id,
            "flow_run_id": flow_run_id,
            "name": task,
            "task_key": task,
            "dynamic_key": "0",
            "state": new,
        },
    )
    held = answer.get("state") or {}
    if held.get("type") != new["type"] or new.get("name", held.get("name")) != held.get("name"):
        set_task_run_state(api, task_id, new)
    return task_id


def set_task_run_state(api: PrefectApi, task_id: str, new: dict) -> None:
    api.post(f"task_runs/{task_id}/set_state", {"state": new, "force": True})


def create_artifact(api: PrefectApi, artifact: dict, flow_run_id: str, task_id: str) -> None:
    body = {**artifact, "flow_run_id": flow_run_id, "task_run_id": task_id}
    api.post("artifacts/", body, idempotent=False)  # a second POST: a second version


def send_logs(api: PrefectApi, entries: list[dict]) -> None:
    """Log lines, each ``{name, level, message, timestamp, flow_run_id, task_run_id}``."""
    if entries:
        api.post("logs/", entries, idempotent=False)  # a second POST: every line twice


def log_entry(record, flow_run_id: str, task_id: str | None = None) -> dict:
    """A ``logging.LogRecord`` as Prefect keeps a log line."""
    return {
        "name": record.name,
        "level": record.levelno,
        "message": record.getMessage(),
        "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
        "flow_run_id": flow_run_id,
        "task_run_id": task_id,
    }


# -- artifacts: what a task made, as the Prefect UI shows it -------------------------------


def artifacts(task: str, outputs: dict) -> list[dict]:
    """A task's metrics tables, confusion matrices and report links, as Prefect artifacts
    (``key``, ``type``, ``description``, ``data``); other outputs have none. One that
    cannot be built (a malformed confusion matrix) is left out with a warning: it shows
    what a finished task made, and never fails the task."""
    made = []
    for output, artifact in outputs.items():
        if isinstance(artifact, list):
            continue
        try:
            built = _built(task, output, artifact)
        except Exception as exc:  # noqa: BLE001 - a user's metadata, in any shape
            log.warning("%s: no Prefect artifact for %s (%r)", task, output, exc)
            continue
        if built is not None:
            made.append(built)
    return made


def _built(task: str, output: str, artifact) -> dict | None:
    key = artifact_key(task, output)
    title = artifact.schema_title
    if title == "system.Metrics" and artifact.metadata:
        rows = [{"metric": k, "value": _finite(v)} for k, v in artifact.metadata.items()]
        return _artifact(key, "table", json.dumps(rows, allow_nan=False), f"{task}: {output}")
    if title == "system.ClassificationMetrics" and "confusionMatrix" in artifact.metadata:
        return _artifact(key, "markdown", confusion_markdown(artifact.metadata))
    if title in ("system.HTML", "system.Markdown"):
        return _artifact(key, "markdown", f"[{task} {output}]({Path(artifact.path).as_uri()})")
    return None


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a metric that is one is kept as its name ("nan")."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _artifact(key: str, kind: str, data: str, description: str | None = None) -> dict:
    return {"key": key, "type": kind, "data": data, "description": description}


def artifact_key(task: str, output: str) -> str:
    """Prefect's artifact keys: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{task}-{output}".lower()).strip("-")


def confusion_markdown(metadata: dict) -> str:
    matrix = metadata["confusionMatrix"]
    names = [c.get("displayName", "") for c in matrix["annotationSpecs"]]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, matrix["rows"], strict=True):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row["row"]) + " |")
    return "\n".join(lines)
