"""Input resolution and scope: what a task sees, and what a DAG hands back.

A task's inputs come from its DAG's scope (the pipeline's arguments, a loop's item), from
upstream tasks' outputs, or from constants; a DAG's outputs come from its tasks, through
``dsl.OneOf`` where branches offer alternatives. The same rules as Kubeflow's driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loopline.core.errors import LooplineError, UsageError
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


class UnresolvedInput(LooplineError):
    """A task's input has no value: the message says why and what to change."""

    def __init__(self, name: str, why: str, fix: str):
        super().__init__(f"input {name} has no value: {why}; {fix}")
        self.input = name


def resolve_inputs(
    task: dict, scope: Outputs, done: dict[str, Node], declared: dict | None = None
) -> Outputs:
    """``task``'s inputs from its DAG's ``scope`` and the ``done`` upstream tasks.

    An input without a value (an optional pipeline input left out, the output of an
    upstream task that failed under ``.ignore_upstream_failure()``) is left out when the
    component ``declared`` it optional or with a default, as Kubeflow's driver does: the
    task then runs with that default. Otherwise it raises :class:`UnresolvedInput`.
    """
    resolved = Outputs()
    inputs = task.get("inputs", {})
    for kind in ("parameters", "artifacts"):
        for key, spec in inputs.get(kind, {}).items():
            value = _value(kind, spec, scope, done)
            if value is _NONE:
                continue
            if isinstance(value, _Missing):
                wanted = (declared or {}).get(kind, {}).get(key, {})
                if "defaultValue" in wanted or wanted.get("isOptional"):
                    continue
                raise UnresolvedInput(key, value.why, value.fix)
            getattr(resolved, kind)[key] = value
    return resolved


@dataclass
class _Missing:
    why: str
    fix: str


def _value(kind: str, spec: dict, scope: Outputs, done: dict[str, Node]) -> Any:
    values = getattr(scope, kind)
    if "componentInputParameter" in spec or "componentInputArtifact" in spec:
        source = spec.get("componentInputParameter") or spec["componentInputArtifact"]
        if source not in values:
            return _Missing(
                f"it reads its pipeline's input {source}, which was not given and has no default",
                f"pass {source} to the pipeline (--param {source}=VALUE for a run's "
                f"parameter), or give {source} a default"
                if kind == "parameters"
                else f"declare this task's input Optional with a default of None, or give "
                f"the pipeline an artifact for {source} (from a pipeline that calls it, or "
                f"through dsl.importer)",
            )
        value = values[source]
        if "parameterExpressionSelector" in spec:  # a loop item's field: item.a
            value = select(spec["parameterExpressionSelector"], value)
        return value
    if "taskOutputParameter" in spec or "taskOutputArtifact" in spec:
        source = spec.get("taskOutputParameter") or spec["taskOutputArtifact"]
        producer = source["producerTask"]
        output = source.get("outputParameterKey") or source["outputArtifactKey"]
        node = done[producer]
        produced = getattr(node.outputs, kind)
        if output in produced:
            return produced[output]
        if node.status is Status.SUCCEEDED:
            return _Missing(
                f"upstream task {producer} succeeded without producing its output {output}",
                f"make {producer} write {output} on every path",
            )
        how = "failed" if node.status is Status.FAILED else "was skipped"
        return _Missing(
            f"upstream task {producer} {how} before producing its output {output}",
            "give this input a default value, so that the task can run without it "
            "(.ignore_upstream_failure() runs it with the default)",
        )
    if "runtimeValue" in spec:
        return spec["runtimeValue"]["constant"]
    if "taskFinalStatus" in spec:
        node = done[spec["taskFinalStatus"]["producerTask"]]
        return {
            "state": "SUCCEEDED" if node.status is Status.SUCCEEDED else "FAILED",
            "pipelineTaskName": spec["taskFinalStatus"]["producerTask"],
            "error": {"message": str(node.error)} if node.error else {},
        }
    return _NONE  # no kind the local runner knows: left out, as before


def with_defaults(component: dict, inputs: Outputs) -> Outputs:
    """A sub-pipeline's inputs with the defaults of those its caller left out."""
    declared = component.get("inputDefinitions", {}).get("parameters", {})
    defaults = {
        name: _cast(name, spec["defaultValue"], spec["parameterType"])
        for name, spec in declared.items()
        if name not in inputs.parameters and "defaultValue" in spec
    }
    return Outputs({**defaults, **inputs.parameters}, dict(inputs.artifacts))


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


_PYTHON = {
    "NUMBER_INTEGER": "an int",
    "NUMBER_DOUBLE": "a float",
    "STRING": "a str",
    "BOOLEAN": "a bool",
    "LIST": "a list",
    "STRUCT": "a dict",
}


class OutputTypeError(LooplineError, TypeError):
    """A task or pipeline returned a value its declared output type does not allow."""


def check_outputs(component: dict, outputs: Outputs, who: Callable[[str], str]) -> None:
    """Refuse an output parameter whose value its declared type does not allow, as
    Kubeflow's executor does; ``who(output)`` names what returned it."""
    declared = component.get("outputDefinitions", {}).get("parameters", {})
    for key, value in outputs.parameters.items():
        kind = declared.get(key, {}).get("parameterType")
        if kind in _PYTHON and not _allows(kind, value):
            raise OutputTypeError(
                f"output {key} is declared {kind} ({_PYTHON[kind]}), but {who(key)} returned "
                f"{value!r}, {_article(type(value).__name__)}; return {_PYTHON[kind]} "
                f"there, or declare the output with the type it returns"
            )


def _allows(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return kind == "BOOLEAN"
    if kind == "NUMBER_INTEGER":
        return isinstance(value, int) or isinstance(value, float) and value.is_integer()
    if kind == "NUMBER_DOUBLE":
        return isinstance(value, int | float)
    return isinstance(value, _TYPES[kind])


def _article(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"
