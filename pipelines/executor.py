"""Runs a compiled KFP v2 pipeline (IR) inside a Prefect flow: one Prefect task per KFP task.

The IR is walked the way Kubeflow's driver walks it: each DAG's tasks start as soon as the
tasks they depend on finish, so independent tasks run concurrently. Sub-DAGs carry the
control flow: ``dsl.If/Elif/Else`` (trigger conditions), ``dsl.ParallelFor`` (an iterator
with a parallelism limit; outputs fan in as lists for ``dsl.Collected``), ``dsl.ExitHandler``
(a task that runs once its upstream completes, failed or not) and pipelines used as
components. Leaf tasks get KFP's executor input (parameters, artifact URIs under the run's
folder, placeholders resolved), so components behave as they do on Kubeflow.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from threading import BoundedSemaphore
from typing import Any

# Imported here, not inside tasks: concurrent first imports of kfp.local race in threads.
from google.protobuf import json_format
from kfp.dsl.executor import create_artifact_instance
from kfp.local import executor_input_utils, executor_output_utils, placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from components import progress
from components.errors import UsageError
from pipelines import component_envs, component_runtime
from pipelines.cache import TaskCache, from_cache, to_cache
from pipelines.conditions import evaluate, select
from pipelines.ir import EXECUTOR_MODULE, PipelineIR, declared_env
from pipelines.results import PROGRESS, TASK_LOG, RunListener, TaskRecord

log = logging.getLogger("loopline.executor")

_TYPES = {
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "STRING": str,
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}


class PipelineFailed(RuntimeError):
    """A task failed; the message names the task and its error."""

    def __init__(self, task: str, error: BaseException):
        super().__init__(f"task {task} failed: {error}")
        self.task = task
        self.error = error


class InputError(UsageError):
    """Pipeline arguments do not match the pipeline's inputs."""


@dataclass
class Outputs:
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False


@dataclass
class Node:
    """How one task ended: succeeded (with outputs), skipped or failed."""

    status: str
    outputs: Outputs = field(default_factory=Outputs)
    error: BaseException | None = None
    failed_task: str | None = None


class PipelineRun:
    """One execution of a pipeline: its id, folder, cache and the tasks it ran."""

    def __init__(
        self,
        ir: PipelineIR,
        *,
        artifact_root: Path,
        cache: TaskCache | None,
        runtime: component_runtime.ProcessPool | component_runtime.InProcess,
        task_wrapper=None,
        listener: RunListener | None = None,
        capture_output: bool = True,
        envs_home: Path | None = None,
    ):
        self.ir = ir
        # Components that declare packages get environments under here (component_envs).
        self.envs_home = envs_home or Path(artifact_root).parent
        self.run_id = uuid.uuid4().hex
        self.run_name = f"{ir.name}-{datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')}"
        self.pipeline_root = Path(artifact_root)
        self.run_dir = self.pipeline_root / self.run_name
        self.cache = cache
        self.runtime = runtime
        # Wraps each leaf call (the Prefect layer makes it a named Prefect task).
        self.task_wrapper = task_wrapper or (lambda name, spec, fn: fn)
        self.listener = listener
        # Each task's stdout and stderr go to its task.log instead of the terminal.
        self.capture_output = capture_output
        self.records: list[TaskRecord] = []
        self.leaf_outputs: dict[str, Outputs] = {}

    def execute(self, arguments: dict) -> dict[str, Any]:
        inputs = Outputs(parameters=coerce_arguments(self.ir, arguments))
        node = self._run_dag(self.ir.root, inputs, prefix="")
        if node.status == "failed":
            raise PipelineFailed(node.failed_task, node.error)
        return {**node.outputs.parameters, **node.outputs.artifacts}

    # -- DAGs ---------------------------------------------------------------------------

    def _run_dag(self, component: dict, scope: Outputs, prefix: str) -> Node:
        tasks = component["dag"]["tasks"]
        futures: dict[str, Future] = {}
        with ThreadPoolExecutor(max_workers=max(len(tasks), 1)) as pool:
            for name in _topological(tasks):
                context = contextvars.copy_context()  # keeps Prefect's flow run context
                futures[name] = pool.submit(
                    context.run, self._run_task, name, tasks[name], scope, prefix, futures
                )
            nodes = {name: future.result() for name, future in futures.items()}
        return _first_failure(nodes.values()) or Node(
            "succeeded", _dag_outputs(component["dag"], nodes)
        )

    def _run_task(
        self, name: str, task: dict, scope: Outputs, prefix: str, futures: dict[str, Future]
    ) -> Node:
        upstream = {u: futures[u].result() for u in _upstream(task)}
        broken = [n for n in upstream.values() if n.status == "failed"]
        if (
            broken
            and task.get("triggerPolicy", {}).get("strategy") != "ALL_UPSTREAM_TASKS_COMPLETED"
        ):
            log.info(
                "task %s skipped: upstream task %s failed", prefix + name, broken[0].failed_task
            )
            return self._skipped(prefix + name)
        try:
            inputs = _resolve_inputs(task, scope, upstream)
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition and not evaluate(condition, inputs.parameters):
                return self._skipped(prefix + name)
            component = self.ir.component(task["componentRef"]["name"])
            if "parameterIterator" in task or "artifactIterator" in task:
                return self._run_loop(name, task, component, inputs, prefix)
            if "dag" in component:
                return self._run_dag(component, inputs, prefix=f"{prefix}{name}.")
            return Node("succeeded", self._run_leaf(prefix + name, task, component, inputs))
        except PipelineFailed as exc:
            return Node("failed", error=exc.error, failed_task=exc.task)
        except Exception as exc:  # one task's failure must not crash the run: record it
            return Node("failed", error=exc, failed_task=prefix + name)

    def _run_loop(
        self, name: str, task: dict, component: dict, inputs: Outputs, prefix: str
    ) -> Node:
        over_artifacts = "artifactIterator" in task
        iterator = task["artifactIterator" if over_artifacts else "parameterIterator"]
        items = iterator["items"]
        if over_artifacts:  # a list of artifacts: a sub-pipeline's dsl.Collected output
            values = inputs.artifacts[items["inputArtifact"]]
        elif "raw" in items:
            values = json.loads(items["raw"])
        else:
            values = inputs.parameters[items["inputParameter"]]
        if isinstance(values, str):
            values = json.loads(values)
        limit = task.get("iteratorPolicy", {}).get("parallelismLimit") or len(values) or 1
        gate = BoundedSemaphore(limit)

        def one(index: int, item: Any) -> Node:
            with gate:
                item_input = {iterator["itemInput"]: item}
                scope = (
                    Outputs(dict(inputs.parameters), {**inputs.artifacts, **item_input})
                    if over_artifacts
                    else Outputs({**inputs.parameters, **item_input}, dict(inputs.artifacts))
                )
                return self._run_dag(component, scope, prefix=f"{prefix}{name}[{index}].")

        with ThreadPoolExecutor(max_workers=max(len(values), 1)) as pool:
            runs = [
                pool.submit(contextvars.copy_context().run, one, i, v) for i, v in enumerate(values)
            ]
            nodes = [r.result() for r in runs]
        if failure := _first_failure(nodes):
            return failure
        collected = Outputs()  # dsl.Collected: each output becomes the list over iterations
        for node in nodes:
            for target, outputs in ((collected.parameters, node.outputs.parameters),
                                    (collected.artifacts, node.outputs.artifacts)):  # fmt: skip
                for key, value in outputs.items():
                    into = target.setdefault(key, Collected())
                    if isinstance(value, Collected):  # from a loop inside this one: one flat
                        into.extend(value)  # list, as Kubeflow collects it
                    else:
                        into.append(value)
        return Node("succeeded", collected)

    # -- leaves -------------------------------------------------------------------------

    def _run_leaf(self, name: str, task: dict, component: dict, inputs: Outputs) -> Outputs:
        executor = self.ir.executor(component)
        started = time.perf_counter()
        if self.listener:
            self.listener.task_started(name, self.run_dir / _folder(name))
        try:
            if "importer" in executor:
                outputs = self._import(name, component, executor["importer"], inputs)
            else:
                call = self.task_wrapper(name, task, self._run_container)
                outputs = call(name, task, component, executor["container"], inputs)
        except Exception:
            self._record(name, "failed", started)
            raise
        self.leaf_outputs[name] = outputs
        self._record(name, "succeeded", started, cached=outputs.from_cache)
        return outputs

    def _record(
        self, name: str, status: str, started: float | None = None, *, cached: bool = False
    ) -> None:
        seconds = time.perf_counter() - started if started is not None else 0.0
        folder = self.run_dir / _folder(name)
        record = TaskRecord(name, status, cached, seconds, folder)
        self.records.append(record)
        if self.listener:
            self.listener.task_finished(record)

    def _skipped(self, name: str) -> Node:
        self._record(name, "skipped")
        return Node("skipped")

    def _run_container(
        self, name: str, task: dict, component: dict, container: dict, inputs: Outputs
    ) -> Outputs:
        spec = json_format.ParseDict(component, pipeline_spec_pb2.ComponentSpec())
        caching = self.cache is not None and task.get("cachingOptions", {}).get(
            "enableCache", False
        )
        key = (
            self.cache.key(component, container, inputs.parameters, inputs.artifacts)
            if caching
            else None
        )
        if key and (entry := self.cache.get(key)):
            log.info("task %s: served from cache (%s)", name, key[:12])
            return Outputs(*from_cache(entry), from_cache=True)
        task_root = self.run_dir / _folder(name)
        task_log = str(task_root / TASK_LOG) if self.capture_output else None
        executor_input = executor_input_utils.construct_executor_input(
            component_spec=spec,
            arguments={**inputs.parameters, **inputs.artifacts},
            task_root=str(task_root),
            block_input_artifact=False,
        )
        as_dict = executor_input_utils.executor_input_to_dict(executor_input, spec)
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        # What a pod would get from a Kubernetes Secret comes from this environment here.
        platform = self.ir.kubernetes(component["executorLabel"])
        env.update({k: os.environ[k] for k in declared_env(platform) if k in os.environ})
        env[progress.ENV] = str(task_root / PROGRESS)
        _warn_resources(name, container)
        command, args = container.get("command", []), container.get("args", [])
        if any(EXECUTOR_MODULE in part for part in command):
            resolved = placeholder_utils.resolve_self_references_in_executor_input(
                executor_input_dict=as_dict,
                pipeline_resource_name=self.run_name,
                task_resource_name=name,
                pipeline_root=str(self.pipeline_root),
                pipeline_job_id=self.run_id,
                pipeline_task_id=uuid.uuid4().hex,
            )
            _integral_list_items(component, resolved)
            call = component_runtime.python_call(command, args, resolved, env, log_path=task_log)
            wanted = component_envs.requirements(command)
            if wanted:  # its own environment; without packages, a warm pool worker
                python = component_envs.python_for(self.envs_home, wanted)
                component_envs.run_in_env(python, call, {**os.environ, **env})
            else:
                self.runtime.run(call)
        else:
            full = placeholder_utils.replace_placeholders(
                full_command=[*command, *args],
                executor_input_dict=as_dict,
                pipeline_resource_name=self.run_name,
                task_resource_name=name,
                pipeline_root=str(self.pipeline_root),
                unique_pipeline_id=self.run_id,
            )
            task_root.mkdir(parents=True, exist_ok=True)
            component_runtime.run_container(full, env, cwd=task_root, log_path=task_log)
        raw = executor_output_utils.get_outputs_for_task(executor_input, spec)
        outputs = _split(component, raw)
        if key:
            entry = to_cache(outputs.parameters, outputs.artifacts, task=name, run=self.run_name)
            self.cache.put(key, entry)
        return outputs

    def _import(self, name: str, component: dict, importer: dict, inputs: Outputs) -> Outputs:
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
        return Outputs(artifacts={output_name: artifact})

    def task_outputs_json(self) -> dict[str, dict[str, Any]]:
        """Each leaf task's outputs: parameter values, and artifact paths (cache hits included)."""
        return {
            name: {
                **outputs.parameters,
                **{k: _paths(v) for k, v in outputs.artifacts.items()},
            }
            for name, outputs in self.leaf_outputs.items()
        }


def _first_failure(nodes) -> Node | None:
    """A DAG fails with its first failed task's error, once all its tasks have ended."""
    failed = next((n for n in nodes if n.status == "failed"), None)
    return failed and Node("failed", error=failed.error, failed_task=failed.failed_task)


def coerce_arguments(ir: PipelineIR, arguments: dict) -> dict:
    """Pipeline arguments checked against the declared inputs and cast to their types."""
    declared = ir.root.get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(arguments) - set(declared))
    if unknown:
        raise InputError(
            f"pipeline {ir.name} has no parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {', '.join(declared) or 'none'}"
        )
    for name, spec in ir.root.get("inputDefinitions", {}).get("artifacts", {}).items():
        if not spec.get("isOptional"):  # fail now, not with a KeyError in the middle of a run
            raise InputError(
                f"pipeline {ir.name} takes the artifact {name}, which a run cannot be given "
                f"from the command line; inside the pipeline, make it with "
                f"dsl.importer(artifact_uri=...) and pass that task's output instead"
            )
    values = {}
    for name, spec in declared.items():
        if name in arguments:
            values[name] = _cast(name, arguments[name], spec["parameterType"])
        elif "defaultValue" in spec:
            values[name] = _cast(name, spec["defaultValue"], spec["parameterType"])
        elif not spec.get("isOptional"):
            raise InputError(
                f"pipeline {ir.name} needs parameter {name}; pass --param {name}=VALUE"
            )
    return values


def _cast(name: str, value: Any, kind: str) -> Any:
    wanted = _TYPES.get(kind)
    if (
        wanted is None
        or isinstance(value, wanted)
        and not (wanted is int and isinstance(value, bool))
    ):
        return value
    if wanted is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise InputError(f"parameter {name} must be {kind.lower()}, got {value!r}")


def _topological(tasks: dict) -> list[str]:
    order, seen = [], set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for upstream in _upstream(tasks[name]):
            visit(upstream)
        order.append(name)

    for name in tasks:
        visit(name)
    return order


def _upstream(task: dict) -> set[str]:
    names = set(task.get("dependentTasks", []))
    inputs = task.get("inputs", {})
    for spec in [*inputs.get("parameters", {}).values(), *inputs.get("artifacts", {}).values()]:
        for kind in ("taskOutputParameter", "taskOutputArtifact", "taskFinalStatus"):
            if kind in spec:
                names.add(spec[kind]["producerTask"])
    return names


def _resolve_inputs(task: dict, scope: Outputs, upstream: dict[str, Node]) -> Outputs:
    resolved = Outputs()
    inputs = task.get("inputs", {})
    for key, spec in inputs.get("parameters", {}).items():
        if "componentInputParameter" in spec:
            value = scope.parameters[spec["componentInputParameter"]]
            if "parameterExpressionSelector" in spec:  # a loop item's field: item.a
                value = select(spec["parameterExpressionSelector"], value)
            resolved.parameters[key] = value
        elif "taskOutputParameter" in spec:
            source = spec["taskOutputParameter"]
            resolved.parameters[key] = upstream[source["producerTask"]].outputs.parameters[
                source["outputParameterKey"]
            ]
        elif "runtimeValue" in spec:
            resolved.parameters[key] = spec["runtimeValue"]["constant"]
        elif "taskFinalStatus" in spec:
            node = upstream[spec["taskFinalStatus"]["producerTask"]]
            resolved.parameters[key] = {
                "state": "SUCCEEDED" if node.status == "succeeded" else "FAILED",
                "pipelineTaskName": spec["taskFinalStatus"]["producerTask"],
                "error": {"message": str(node.error)} if node.error else {},
            }
    for key, spec in inputs.get("artifacts", {}).items():
        if "componentInputArtifact" in spec:
            resolved.artifacts[key] = scope.artifacts[spec["componentInputArtifact"]]
        elif "taskOutputArtifact" in spec:
            source = spec["taskOutputArtifact"]
            resolved.artifacts[key] = upstream[source["producerTask"]].outputs.artifacts[
                source["outputArtifactKey"]
            ]
    return resolved


def _dag_outputs(dag: dict, nodes: dict[str, Node]) -> Outputs:
    outputs = Outputs()
    spec = dag.get("outputs", {})
    # dsl.OneOf lists one selector per branch: the output is the one branch's that ran.
    for key, value in spec.get("parameters", {}).items():
        selectors = value.get("valueFromOneof", {}).get("parameterSelectors") or [
            value["valueFromParameter"]
        ]
        for selector in selectors:
            found = nodes[selector["producerSubtask"]].outputs.parameters
            if nodes[selector["producerSubtask"]].status == "succeeded" and (
                selector["outputParameterKey"] in found
            ):
                outputs.parameters[key] = found[selector["outputParameterKey"]]
                break
    for key, value in spec.get("artifacts", {}).items():
        for selector in value["artifactSelectors"]:
            found = nodes[selector["producerSubtask"]].outputs.artifacts
            if nodes[selector["producerSubtask"]].status == "succeeded" and (
                selector["outputArtifactKey"] in found
            ):
                outputs.artifacts[key] = found[selector["outputArtifactKey"]]
                break
    return outputs


class Collected(list):
    """The outputs of a loop's iterations; collected again by an outer loop, it is
    flattened (a task's own list output, collected, stays a list of lists)."""


def _split(component: dict, raw: dict) -> Outputs:
    artifact_names = set(component.get("outputDefinitions", {}).get("artifacts", {}))
    return Outputs(
        parameters={k: v for k, v in raw.items() if k not in artifact_names},
        artifacts={k: v for k, v in raw.items() if k in artifact_names},
    )


def _integral_list_items(component: dict, executor_input: dict) -> None:
    """Protobuf turns every number into a double: give fanned-in List[int] values back as ints.

    (kfp.local hands them over as floats, so a ``List[int]`` consumer fails there.)
    """
    declared = component.get("inputDefinitions", {}).get("parameters", {})
    values = executor_input["inputs"].get("parameterValues", {})
    for name, spec in declared.items():
        if spec["parameterType"] == "LIST" and isinstance(values.get(name), list):
            values[name] = [
                int(v) if isinstance(v, float) and v.is_integer() else v for v in values[name]
            ]


def _paths(value: Any) -> Any:
    return [_paths(v) for v in value] if isinstance(value, list) else value.path


def _folder(task_path: str) -> Path:
    """``for-loop-2[0].add`` -> ``for-loop-2-0/add``: one folder per task execution."""
    return Path(*[re.sub(r"\[(\d+)\]", r"-\1", part) for part in task_path.split(".")])


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
    if requested:  # every built-in task has them (pipelines/cluster.py): not worth a warning
        log.info(
            "task %s: resource settings %s are not enforced on one machine; Kubernetes applies them",
            name,
            ", ".join(requested),
        )
