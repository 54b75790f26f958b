"""The run's own placeholders (``dsl.PIPELINE_JOB_NAME_PLACEHOLDER`` and the rest), filled
as Kubeflow's driver fills them, with what they mean on one machine.

kfp.local's ``placeholder_utils`` knows only some of them; the others
(``{{$.pipeline_job_resource_name}}``, the job's two times) reach its input/output
resolver, which fails with an IndexError. Here every one is replaced first, in a
component's parameter values and in a container's command, so that kfp's resolver sees
only references to the task's inputs and outputs.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from kfp import dsl
from kfp.dsl import constants

TASK_ID = dsl.PIPELINE_TASK_ID_PLACEHOLDER
WORKSPACE = getattr(dsl, "WORKSPACE_PATH_PLACEHOLDER", "{{$.workspace_path}}")
MOUNT_PATH = getattr(constants, "WORKSPACE_MOUNT_PATH", "/kfp-workspace")  # in a pod


def table(
    *,
    run_name: str,
    run_id: str,
    task_name: str,
    task_id: str,
    pipeline_root: str,
    created: datetime,
    workspace: str,
) -> dict[str, str]:
    """Each placeholder and its value for one execution of one task.

    The job's name and resource name are both the run's name (Kubeflow: the run's display
    name and its Argo workflow's name); the job id is the run's id; the task name is the
    task's own name in its DAG and the task id is unique to this execution (Kubeflow: its
    ML Metadata execution id). The times are RFC 3339 in UTC. The schedule time is the
    create time: Kubeflow's driver gives that for a run no schedule started
    (kubeflow/pipelines#12628), and a scheduled run here is created when its schedule
    fires, seconds after the time it was meant for.
    """
    return {
        dsl.PIPELINE_JOB_NAME_PLACEHOLDER: run_name,
        dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER: run_name,
        dsl.PIPELINE_JOB_ID_PLACEHOLDER: run_id,
        dsl.PIPELINE_TASK_NAME_PLACEHOLDER: task_name,
        TASK_ID: task_id,
        dsl.PIPELINE_ROOT_PLACEHOLDER: pipeline_root,
        dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER: utc_text(created),
        dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER: utc_text(created),
        WORKSPACE: workspace,
        MOUNT_PATH: workspace,
    }


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC, as Kubeflow gives a job's times: ``2026-12-04T14:41:48Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fill(value: Any, values: dict[str, str]) -> Any:
    """``value`` with every placeholder of ``values`` replaced, in strings at any depth."""
    if isinstance(value, str):
        for placeholder, text in values.items():
            if placeholder.startswith("{{"):
                value = value.replace(placeholder, text)
            else:  # a path: only as itself or a folder above (not /kfp-workspace-old)
                pattern = re.escape(placeholder) + r"(?![\w.-])"
                value = re.sub(pattern, lambda _, text=text: text, value)
        return value
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    return value


def fill_parameters(executor_input: dict, values: dict[str, str]) -> None:
    """Fill the placeholders in an executor input's parameter values, in place."""
    parameters = executor_input.get("inputs", {}).get("parameterValues", {})
    for name, value in parameters.items():
        parameters[name] = fill(value, values)


def fill_command(command: list[str], values: dict[str, str]) -> list[str]:
    """A container's command and arguments with the placeholders filled; inside a
    Concat or IfPresent structure (JSON text), the values are JSON-escaped."""
    escaped = {k: json.dumps(v)[1:-1] for k, v in values.items()}
    return [fill(part, escaped if part.startswith("{") else values) for part in command]


def used(value: Any, placeholder: str) -> bool:
    return placeholder in json.dumps(value)
