"""What a pipeline run hands back, whichever engine ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaskRecord:
    name: str
    status: str
    cached: bool
    seconds: float


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
