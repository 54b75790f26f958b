"""What a pipeline run reports while it runs, and hands back at the end, whichever engine
ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

TASK_LOG = "task.log"  # a task's stdout and stderr, beside its outputs
PROGRESS = "progress.json"  # a long task's progress (loopline.core.progress writes it)


class Status(StrEnum):
    """How a task ended. A StrEnum: records and JSON reports show the plain word."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class TaskRecord:
    name: str
    status: Status
    cached: bool
    seconds: float
    folder: Path | None = None  # the task's folder under the run: outputs, task.log


class RunListener(Protocol):
    """Told as tasks start and end (from the executor's threads), e.g. to show progress."""

    def task_started(self, name: str, folder: Path) -> None: ...
    def task_finished(self, record: TaskRecord) -> None: ...


@dataclass
class RunResult:
    succeeded: bool
    pipeline: str
    run_name: str
    run_dir: Path | None
    outputs: dict[str, Any] = field(default_factory=dict)
    # task name -> output name -> parameter value or artifact path
    task_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: list[TaskRecord] = field(default_factory=list)
    error: str | None = None
    failed_task: str | None = None
    flow_run_id: str | None = None

    def artifact(self, task: str, output: str) -> Path | None:
        value = self.task_outputs.get(task, {}).get(output)
        return Path(value) if isinstance(value, str) else None


def jsonable(outputs: dict[str, Any]) -> dict[str, Any]:
    """A run's outputs as JSON values: an artifact as its uri, path and metadata."""
    return {k: _artifact_json(v) for k, v in outputs.items()}


def _artifact_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_artifact_json(v) for v in value]
    if hasattr(value, "schema_title"):
        return {"uri": value.uri, "path": value.path, "metadata": value.metadata}
    return value
