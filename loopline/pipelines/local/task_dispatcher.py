"""Runs one leaf task: a lightweight Python component, a container component or an importer.

The task gets KFP's executor input (parameters, artifact URIs under the run's folder,
placeholders resolved), so a component behaves as it does in a Kubeflow pod. Results are
read back from its executor output; with caching on, an unchanged task is served from the
task cache instead.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Imported here, not inside tasks: concurrent first imports of kfp.local race in threads.
from google.protobuf import json_format
from kfp.dsl.executor import create_artifact_instance
from kfp.dsl.types import artifact_types
from kfp.local import executor_input_utils, executor_output_utils, placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from loopline.core import progress
from loopline.pipelines.ir import EXECUTOR_MODULE, PipelineIR, declared_env
from loopline.pipelines.local import component_envs, component_runtime, placeholders
from loopline.pipelines.local.cache import TaskCache, from_cache, to_cache
from loopline.pipelines.local.results import PROGRESS, TASK_LOG
from loopline.pipelines.local.scope import Outputs, check_outputs

log = logging.getLogger("loopline.run")


@dataclass(frozen=True)
class RunPlace:
    """Where and as what a run's tasks execute: what KFP's placeholders name."""

    run_id: str
    run_name: str
    pipeline_root: Path
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def run_dir(self) -> Path:
        return self.pipeline_root / self.run_name

    @property
    def workspace(self) -> Path:
        """The folder ``dsl.WORKSPACE_PATH_PLACEHOLDER`` names: shared by the run's tasks."""
        return self.run_dir / "workspace"

    def placeholders(self, task_path: str) -> dict[str, str]:
        """The run's placeholders and their values for one execution of a task."""
        return placeholders.table(
            run_name=self.run_name,
            run_id=self.run_id,
            task_name=task_path.rsplit(".", 1)[-1],
            task_id=uuid.uuid4().hex,
            pipeline_root=str(self.pipeline_root),
            created=self.created,
            workspace=str(self.workspace),
        )

    def task_dir(self, task_path: str) -> Path:
        """``for-loop-2[0].add`` -> ``<run>/for-loop-2-0/add``: one folder per execution."""
        parts = [re.sub(r"\[(\d+)\]", r"-\1", part) for part in task_path.split(".")]
        return self.run_dir.joinpath(*parts)


class TaskDispatcher:
    def __init__(
        self,
        ir: PipelineIR,
        place: RunPlace,
        *,
        cache: TaskCache | None,
        runtime: component_runtime.Runtime,
        envs_home: Path,
        capture_output: bool,
    ):
        self.ir = ir
        self.place = place
        self.cache = cache
        self.runtime = runtime
        self.envs_home = envs_home  # components that declare packages get environments here
        self.capture_output = capture_output  # stdout and stderr to the task's task.log

    def run(self, name: str, task: dict, component: dict, inputs: Outputs) -> Outputs:
        executor = self.ir.executor(component)
        if "importer" in executor:
            return self._import(component, executor["importer"], inputs)
        return self._run_container(name, task, component, executor["container"], inputs)

    def _run_container(
        self, name: str, task: dict, component: dict, container: dict, inputs: Outputs
    ) -> Outputs:
        caching = (
            self.cache is not None
            and task.get("cachingOptions", {}).get("enableCache", False)
            # Each run's workspace is new: a task that uses it must run to fill it.
            and not _uses_workspace(
                [inputs.parameters, container.get("command", []), container.get("args", [])]
            )  # fmt: skip
        )
        key = (
            self.cache.key(component, container, inputs.parameters, inputs.artifacts)
            if caching
            else None
        )
        if key and (entry := self.cache.get(key, run=self.place.run_name)):
            log.info("task %s: served from cache (%s)", name, key[:12])
            return _typed(component, Outputs(*from_cache(entry), from_cache=True))
        spec = json_format.ParseDict(component, pipeline_spec_pb2.ComponentSpec())
        task_root = self.place.task_dir(name)
        executor_input = executor_input_utils.construct_executor_input(
            component_spec=spec,
            arguments={**inputs.parameters, **inputs.artifacts},
            task_root=str(task_root),
            block_input_artifact=False,
        )
        as_dict = executor_input_utils.executor_input_to_dict(executor_input, spec)
        env = self._environment(name, component, container, task_root)
        command, args = container.get("command", []), container.get("args", [])
        values = self.place.placeholders(name)
        if placeholders.used([as_dict["inputs"], command, args], placeholders.WORKSPACE):
            self.place.workspace.mkdir(parents=True, exist_ok=True)
        placeholders.fill_parameters(as_dict, values)
        if any(EXECUTOR_MODULE in part for part in command):
            self._run_python(name, component, command, args, as_dict, env, values)
        else:
            full = placeholder_utils.replace_placeholders(
                full_command=placeholders.fill_command([*command, *args], values),
                executor_input_dict=as_dict,
                pipeline_resource_name=self.place.run_name,
                task_resource_name=name,
                pipeline_root=str(self.place.pipeline_root),
                unique_pipeline_id=self.place.run_id,
            )
            task_root.mkdir(parents=True, exist_ok=True)
            component_runtime.run_container(full, env, cwd=task_root, log_path=self._log(name))
        raw = executor_output_utils.get_outputs_for_task(executor_input, spec)
        outputs = _typed(component, _split(component, raw))
        check_outputs(component, outputs, lambda output: "the task")  # before it is cached
        if key:
            entry = to_cache(
                outputs.parameters, outputs.artifacts, task=name, run=self.place.run_name
            )
            self.cache.put(key, entry)
        return outputs

    def _environment(
        self, name: str, component: dict, container: dict, task_root: Path
    ) -> dict[str, str]:
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        # What a pod would get from a Kubernetes Secret comes from this environment here.
        platform = self.ir.kubernetes(component["executorLabel"])
        env.update({k: os.environ[k] for k in declared_env(platform) if k in os.environ})
        env[progress.ENV] = str(task_root / PROGRESS)
        _warn_resources(name, container)
        return env

    def _run_python(
        self,
        name: str,
        component: dict,
        command: list,
        args: list,
        as_dict: dict,
        env: dict,
        values: dict[str, str],
    ) -> None:
        resolved = placeholder_utils.resolve_self_references_in_executor_input(
            executor_input_dict=as_dict,
            pipeline_resource_name=self.place.run_name,
            task_resource_name=name,
            pipeline_root=str(self.place.pipeline_root),
            pipeline_job_id=self.place.run_id,
            pipeline_task_id=values[placeholders.TASK_ID],
        )
        _integral_numbers(component, resolved)
        call = component_runtime.python_call(command, args, resolved, env, log_path=self._log(name))
        wanted = component_envs.requirements(command)
        if wanted:  # its own environment; without packages, a warm pool worker
            python = component_envs.python_for(self.envs_home, wanted)
            component_envs.run_in_env(python, call, {**os.environ, **env})
        else:
            self.runtime.run(call)

    def _log(self, name: str) -> str | None:
        return str(self.place.task_dir(name) / TASK_LOG) if self.capture_output else None

    def _import(self, component: dict, importer: dict, inputs: Outputs) -> Outputs:
        source = importer["artifactUri"]
        uri = source.get("constant") or inputs.parameters[source["runtimeParameter"]]
        output_name = next(iter(component["outputDefinitions"]["artifacts"]))
        artifact = create_artifact_instance(
            {
                "name": output_name,
                "uri": uri,
                "metadata": importer.get("metadata", {}),
                "type": importer["typeSchema"],
            }
        )
        return _typed(component, Outputs(artifacts={output_name: artifact}))


def _split(component: dict, raw: dict) -> Outputs:
    artifact_names = set(component.get("outputDefinitions", {}).get("artifacts", {}))
    return Outputs(
        parameters={k: v for k, v in raw.items() if k not in artifact_names},
        artifacts={k: v for k, v in raw.items() if k in artifact_names},
    )


def _typed(component: dict, outputs: Outputs) -> Outputs:
    """Keep a custom artifact type (``google.BQTable``) on the artifacts a task made.

    KFP rebuilds an artifact of a type it does not know as a plain ``system.Artifact``,
    so the next task's ``Input[BQTable]`` would get an ``Artifact`` (kfp.local does).
    The declared type travels on the instance, as on Kubeflow, where ML Metadata keeps it.
    """
    declared = component.get("outputDefinitions", {}).get("artifacts", {})
    for name, value in outputs.artifacts.items():
        schema = declared.get(name, {}).get("artifactType", {})
        title = schema.get("schemaTitle")
        if not title or title in artifact_types._SCHEMA_TITLE_TO_TYPE:
            continue
        for artifact in value if isinstance(value, list) else [value]:
            artifact.schema_title = title
            artifact.schema_version = schema.get("schemaVersion", artifact.schema_version)
    return outputs


def _integral_numbers(component: dict, executor_input: dict) -> None:
    """Protobuf turns every number into a double: give whole numbers inside list and dict
    parameters back as ints, at any depth (``List[List[int]]``, ``Dict[str, List[int]]``).

    Kubeflow's launcher writes the executor input as JSON from Go, where a whole double is
    ``1``, so a component there reads ints; kfp.local hands them over as floats, and a
    ``List[int]`` consumer fails.
    """
    declared = component.get("inputDefinitions", {}).get("parameters", {})
    values = executor_input["inputs"].get("parameterValues", {})
    for name, spec in declared.items():
        if spec["parameterType"] in ("LIST", "STRUCT") and name in values:
            values[name] = integral(values[name])


def integral(value: Any) -> Any:
    """``value`` with every whole float inside it, at any depth, an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integral(v) for v in value]
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    return value


def _warn_resources(name: str, container: dict) -> None:
    resources = container.get("resources", {})
    accelerator = resources.get("accelerator", {})
    if accelerator.get("count") or accelerator.get("resourceCount"):
        import torch

        if not torch.cuda.is_available():
            log.warning(
                "task %s asks for an accelerator; none is present here, it runs on CPU", name
            )
    requested = sorted(k for k in resources if k != "accelerator")
    if (
        requested
    ):  # every built-in task has them (loopline/pipelines/cluster/pods.py): not worth a warning
        log.info(
            "task %s: resource settings %s are not enforced on one machine; Kubernetes applies them",
            name,
            ", ".join(requested),
        )


def paths(value: Any) -> Any:
    """An artifact's local path, or the paths of a list of them."""
    return [paths(v) for v in value] if isinstance(value, list) else value.path


def _uses_workspace(values: list) -> bool:
    return any(
        placeholders.used(values, p) for p in (placeholders.WORKSPACE, placeholders.MOUNT_PATH)
    )
