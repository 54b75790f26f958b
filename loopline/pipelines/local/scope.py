"""Input resolution and scope: what a task sees, and what a DAG hands back.

A task's inputs come from its DAG's scope (the pipeline's arguments, a loop's item), from
upstream tasks' outputs, or from constants; a DAG's outputs come from its tasks, through
``dsl.OneOf`` where branches offer alternatives. The same rules as Kubeflow's driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopline.core.errors import UsageError
from loopline.pipelines.ir import PipelineIR
from loopline.pipelines.local.conditions import select
from loopline.pipelines.local.results import Status

_TYPES = {
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "STRING": str,
    "BOOLEAN": bool,
    "LIST": list,
    "STRUCT": dict,
}


class InputError(UsageError):
    """Pipeline arguments do not match the pipeline's inputs."""


@dataclass
class Outputs:
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False


@dataclass
class Node:
    """How one task (or DAG) ended: its status, its outputs, the first failure under it."""

    status: Status
    outputs: Outputs = field(default_factory=Outputs)
    error: BaseException | None = None
    failed_task: str | None = None


class Collected(list):
    """The outputs of a loop's iterations; collected again by an outer loop, it is
    flattened (a task's own list output, collected, stays a list of lists)."""


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


def upstream(task: dict) -> set[str]:
    """The tasks ``task`` waits for: declared dependencies and every task it reads from."""
    names = set(task.get("dependentTasks", []))
    inputs = task.get("inputs", {})
    for spec in [*inputs.get("parameters", {}).values(), *inputs.get("artifacts", {}).values()]:
        for kind in ("taskOutputParameter", "taskOutputArtifact", "taskFinalStatus"):
            if kind in spec:
                names.add(spec[kind]["producerTask"])
    return names


def topological(tasks: dict) -> list[str]:
    order, seen = [], set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for before in upstream(tasks[name]):
            visit(before)
        order.append(name)

    for name in tasks:
        visit(name)
    return order


def resolve_inputs(task: dict, scope: Outputs, done: dict[str, Node]) -> Outputs:
    """``task``'s inputs from its DAG's ``scope`` and the ``done`` upstream tasks."""
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
            resolved.parameters[key] = done[source["producerTask"]].outputs.parameters[
                source["outputParameterKey"]
            ]
        elif "runtimeValue" in spec:
            resolved.parameters[key] = spec["runtimeValue"]["constant"]
        elif "taskFinalStatus" in spec:
            node = done[spec["taskFinalStatus"]["producerTask"]]
            resolved.parameters[key] = {
                "state": "SUCCEEDED" if node.status is Status.SUCCEEDED else "FAILED",
                "pipelineTaskName": spec["taskFinalStatus"]["producerTask"],
                "error": {"message": str(node.error)} if node.error else {},
            }
    for key, spec in inputs.get("artifacts", {}).items():
        if "componentInputArtifact" in spec:
            resolved.artifacts[key] = scope.artifacts[spec["componentInputArtifact"]]
        elif "taskOutputArtifact" in spec:
            source = spec["taskOutputArtifact"]
            resolved.artifacts[key] = done[source["producerTask"]].outputs.artifacts[
                source["outputArtifactKey"]
            ]
    return resolved


def dag_outputs(dag: dict, nodes: dict[str, Node]) -> Outputs:
    """A DAG's outputs. ``dsl.OneOf`` lists one selector per branch: the output is that of
    the first branch that ran."""
    outputs = Outputs()
    spec = dag.get("outputs", {})
    for key, value in spec.get("parameters", {}).items():
        selectors = value.get("valueFromOneof", {}).get("parameterSelectors") or [
            value["valueFromParameter"]
        ]
        found = _first(nodes, selectors, "parameters", "outputParameterKey")
        if found is not _NONE:
            outputs.parameters[key] = found
    for key, value in spec.get("artifacts", {}).items():
        found = _first(nodes, value["artifactSelectors"], "artifacts", "outputArtifactKey")
        if found is not _NONE:
            outputs.artifacts[key] = found
    return outputs


_NONE = object()


def _first(nodes: dict[str, Node], selectors: list[dict], kind: str, key: str) -> Any:
    for selector in selectors:
        node = nodes[selector["producerSubtask"]]
        values = getattr(node.outputs, kind)
        if node.status is Status.SUCCEEDED and selector[key] in values:
            return values[selector[key]]
    return _NONE
