"""Walks a compiled KFP v2 pipeline (IR) the way Kubeflow's driver does.

Each DAG's tasks start as soon as the tasks they depend on end, so independent tasks run
concurrently. Sub-DAGs carry the control flow: ``dsl.If/Elif/Else`` (trigger
conditions), ``dsl.ParallelFor`` (an iterator with a parallelism limit; outputs fan in as
lists for ``dsl.Collected``), ``dsl.ExitHandler`` (a task that runs once its upstream
ends, failed or not) and pipelines used as components. Leaf tasks go to the
``TaskDispatcher``; the Prefect layer wraps each one as a Prefect task.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from threading import BoundedSemaphore
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.layout import ERROR
from loopline.pipelines.ir import PipelineIR
from loopline.pipelines.local import component_runtime
from loopline.pipelines.local.cache import TaskCache
from loopline.pipelines.local.conditions import evaluate
from loopline.pipelines.local.results import TASK_LOG, RunListener, Status, TaskRecord
from loopline.pipelines.local.scope import (
    Collected,
    Node,
    Outputs,
    check_outputs,
    coerce_arguments,
    dag_outputs,
    resolve_inputs,
    topological,
    upstream,
    with_defaults,
)
from loopline.pipelines.local.task_dispatcher import RunPlace, TaskDispatcher, paths

log = logging.getLogger("loopline.run")

# (task name, task spec, the leaf call) -> the call to make instead
TaskWrapper = Callable[[str, dict, Callable[..., Outputs]], Callable[..., Outputs]]


# The DAGs the KFP compiler makes for dsl.If/Elif/Else, ParallelFor and ExitHandler, as
# opposed to pipelines used as components: their outputs are typed as their consumers
# see them (a loop's body declares the list its iterations make together).
_GROUP = re.compile(r"comp-(condition|condition-branches|for-loop|exit-handler)-\d+")


class PipelineFailed(LooplineError, RuntimeError):
    """A task failed; the message names the task, its error and its log."""

    def __init__(self, task: str, error: BaseException, log: Path | None = None):
        where = f" (its log: {log})" if log else ""
        super().__init__(f"task {task} failed: {error}{where}")
        self.task = task
        self.error = error
        self.log = log


class PipelineRun:
    """One execution of a pipeline: its id, folder, cache and the tasks it ran."""

    def __init__(
        self,
        ir: PipelineIR,
        *,
        artifact_root: Path,
        cache: TaskCache | None,
        runtime: component_runtime.Runtime,
        task_wrapper: TaskWrapper | None = None,
        listener: RunListener | None = None,
        capture_output: bool = True,
        envs_home: Path | None = None,
    ):
        self.ir = ir
        self.run_id = uuid.uuid4().hex
        self.run_name = f"{ir.name}-{datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')}"
        self.place = RunPlace(self.run_id, self.run_name, Path(artifact_root))
        self.run_dir = self.place.run_dir
        self.dispatcher = TaskDispatcher(
            ir,
            self.place,
            cache=cache,
            runtime=runtime,
            envs_home=envs_home or Path(artifact_root).parent,
            capture_output=capture_output,
        )
        self.task_wrapper = task_wrapper or (lambda name, spec, fn: fn)
        self.listener = listener
        self.records: list[TaskRecord] = []
        self.leaf_outputs: dict[str, Outputs] = {}

    def execute(self, arguments: dict) -> dict[str, Any]:
        inputs = Outputs(parameters=coerce_arguments(self.ir, arguments))
        node = self._run_dag(self.ir.root, inputs, prefix="")
        if node.status is Status.FAILED:
            log = self.place.task_dir(node.failed_task) / TASK_LOG
            raise PipelineFailed(node.failed_task, node.error, log if log.exists() else None)
        try:
            self._check_dag_outputs(self.ir.root, node, prefix="")
        except Exception as exc:  # the pipeline itself returned the wrong type
            raise PipelineFailed(self.ir.name, exc) from None
        return {**node.outputs.parameters, **node.outputs.artifacts}

    def task_outputs_json(self) -> dict[str, dict[str, Any]]:
        """Each leaf task's outputs: parameter values, and artifact paths (cache hits included)."""
        return {
            name: {**outputs.parameters, **{k: paths(v) for k, v in outputs.artifacts.items()}}
            for name, outputs in self.leaf_outputs.items()
        }

    # -- DAGs ---------------------------------------------------------------------------

    def _run_dag(self, component: dict, scope: Outputs, prefix: str) -> Node:
        tasks = component["dag"]["tasks"]
        futures: dict[str, Future] = {}
        with ThreadPoolExecutor(max_workers=max(len(tasks), 1)) as pool:
            for name in topological(tasks):
                context = contextvars.copy_context()  # keeps Prefect's flow run context
                futures[name] = pool.submit(
                    context.run, self._run_task, name, tasks[name], scope, prefix, futures
                )
            nodes = {name: future.result() for name, future in futures.items()}
        return _first_failure(nodes.values()) or Node(
            Status.SUCCEEDED, dag_outputs(component["dag"], nodes)
        )

    def _run_task(
        self, name: str, task: dict, scope: Outputs, prefix: str, futures: dict[str, Future]
    ) -> Node:
        done = {u: futures[u].result() for u in upstream(task)}
        broken = [n for n in done.values() if n.status is Status.FAILED]
        policy = task.get("triggerPolicy", {})
        if broken and policy.get("strategy") != "ALL_UPSTREAM_TASKS_COMPLETED":
            log.info(
                "task %s skipped: upstream task %s failed", prefix + name, broken[0].failed_task
            )
            return self._skipped(prefix + name)
        try:
            component = self.ir.component(task["componentRef"]["name"])
            inputs = resolve_inputs(task, scope, done, component.get("inputDefinitions"))
            if policy.get("condition") and not evaluate(policy["condition"], inputs.parameters):
                return self._skipped(prefix + name)
            if "parameterIterator" in task or "artifactIterator" in task:
                return self._run_loop(name, task, component, inputs, prefix)
            if "dag" in component:
                inputs = with_defaults(component, inputs)  # as the caller left them out
                node = self._run_dag(component, inputs, prefix=f"{prefix}{name}.")
                if node.status is Status.SUCCEEDED and not _GROUP.fullmatch(
                    task["componentRef"]["name"]
                ):
                    self._check_dag_outputs(component, node, prefix=f"{prefix}{name}.")
                return node
            return Node(Status.SUCCEEDED, self._run_leaf(prefix + name, task, component, inputs))
        except PipelineFailed as exc:
            return Node(Status.FAILED, error=exc.error, failed_task=exc.task)
        except Exception as exc:  # one task's failure must not crash the run: record it
            self._record_failure(prefix + name, exc)
            return Node(Status.FAILED, error=exc, failed_task=prefix + name)

    def _check_dag_outputs(self, component: dict, node: Node, prefix: str) -> None:
        def who(output: str) -> str:
            return f"task {prefix}{_producer(self.ir, component, output)}"

        check_outputs(component, node.outputs, who)

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
        return _first_failure(nodes) or Node(Status.SUCCEEDED, _collect(nodes))

    # -- leaves -------------------------------------------------------------------------

    def _run_leaf(self, name: str, task: dict, component: dict, inputs: Outputs) -> Outputs:
        started = time.perf_counter()
        if self.listener:
            self.listener.task_started(name, self.place.task_dir(name))
        try:
            if "importer" in self.ir.executor(component):
                outputs = self.dispatcher.run(name, task, component, inputs)
            else:  # a component call: the Prefect layer makes it a Prefect task
                call = self.task_wrapper(name, task, self.dispatcher.run)
                outputs = call(name, task, component, inputs)
        except Exception as exc:
            self._note(name, exc)
            self._record(name, Status.FAILED, started)
            raise PipelineFailed(name, exc) from exc
        self.leaf_outputs[name] = outputs
        self._record(name, Status.SUCCEEDED, started, cached=outputs.from_cache)
        return outputs

    def _record(
        self, name: str, status: Status, started: float | None = None, *, cached: bool = False
    ) -> None:
        seconds = time.perf_counter() - started if started is not None else 0.0
        record = TaskRecord(name, status, cached, seconds, self.place.task_dir(name))
        self.records.append(record)
        if self.listener:
            self.listener.task_finished(record)

    def _record_failure(self, name: str, error: BaseException) -> None:
        """A task that failed before its component ran (its inputs, its condition)."""
        self._note(name, error)
        self._record(name, Status.FAILED)

    def _note(self, name: str, error: BaseException) -> None:
        """The failure at the end of the task's log, and as its error unless it wrote one."""
        folder = self.place.task_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        message = f"{type(error).__name__}: {error}\n"
        with open(folder / TASK_LOG, "a") as log:
            log.write(f"loopline: task {name} failed: {message}")
        if not (folder / ERROR).exists():  # the run's summary shows it
            (folder / ERROR).write_text(message)

    def _skipped(self, name: str) -> Node:
        self._record(name, Status.SKIPPED)
        return Node(Status.SKIPPED)


def _first_failure(nodes: Iterable[Node]) -> Node | None:
    """A DAG fails with its first failed task's error, once all its tasks have ended."""
    failed = next((n for n in nodes if n.status is Status.FAILED), None)
    return failed and Node(Status.FAILED, error=failed.error, failed_task=failed.failed_task)


def _producer(ir: PipelineIR, component: dict, output: str) -> str:
    """The leaf task, as a path under ``component``, that makes a DAG's parameter output
    (the first branch's, for a ``dsl.OneOf``)."""
    spec = component["dag"].get("outputs", {}).get("parameters", {}).get(output, {})
    selectors = spec.get("valueFromOneof", {}).get("parameterSelectors") or [
        spec.get("valueFromParameter")
    ]
    if not selectors[0]:
        return "?"
    task = selectors[0]["producerSubtask"]
    inner = ir.component(component["dag"]["tasks"][task]["componentRef"]["name"])
    if "dag" in inner:
        return f"{task}.{_producer(ir, inner, selectors[0]['outputParameterKey'])}"
    return task


def _collect(nodes: list[Node]) -> Outputs:
    """``dsl.Collected``: each output of a loop's body becomes the list over iterations."""
    collected = Outputs()
    for node in nodes:
        for target, outputs in (
            (collected.parameters, node.outputs.parameters),
            (collected.artifacts, node.outputs.artifacts),
        ):
            for key, value in outputs.items():
                into = target.setdefault(key, Collected())
                if isinstance(value, Collected):  # from a loop inside this one: one flat
                    into.extend(value)  # list, as Kubeflow collects it
                else:
                    into.append(value)
    return collected
