"""Compiled KFP v2 pipelines (IR) as loopline reads them: loading and the feature check.

A pipeline reaches the executor as IR whatever its source: a built-in name, a ``.py``
file holding one ``@dsl.pipeline``, a compiled ``.yaml``, or a pipeline object. Features
the executor cannot run are refused here, at submission, naming the feature and the task.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loopline.core.errors import UsageError
from loopline.core.images import PLATFORM_IMAGE
from loopline.pipelines.local.conditions import is_selector

EXECUTOR_MODULE = "kfp.dsl.executor_main"


class UnsupportedPipeline(UsageError):
    """The pipeline uses something this engine cannot run; the message names it."""


@dataclass(frozen=True)
class PipelineIR:
    spec: dict
    platform: dict = field(default_factory=dict)  # kfp-kubernetes settings, when any

    @property
    def name(self) -> str:
        return self.spec["pipelineInfo"]["name"]

    @property
    def root(self) -> dict:
        return self.spec["root"]

    def component(self, name: str) -> dict:
        return self.spec["components"][name]

    def executor(self, component: dict) -> dict:
        return self.spec["deploymentSpec"]["executors"][component["executorLabel"]]

    def parameter_names(self) -> list[str]:
        return list(self.root.get("inputDefinitions", {}).get("parameters", {}))

    def kubernetes(self, executor_label: str) -> dict:
        """The kfp-kubernetes settings of one executor (secrets as env, node selectors ...)."""
        executors = self.platform.get("platforms", {}).get("kubernetes", {})
        return executors.get("deploymentSpec", {}).get("executors", {}).get(executor_label, {})

    def documents(self) -> list[dict]:
        """The IR file's YAML documents: the pipeline spec, then the platform spec."""
        return [self.spec, self.platform] if self.platform else [self.spec]

    def to_yaml(self) -> str:
        """The IR as KFP writes it (:func:`from_documents` reads it back)."""
        return yaml.safe_dump_all(self.documents(), sort_keys=False)

    def write(self, target: Path) -> Path:
        """The IR file, as KFP writes it: the pipeline spec, then the platform spec."""
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_yaml())
        return target


def from_documents(text: str) -> PipelineIR:
    documents = [d for d in yaml.safe_load_all(text) if d]
    return PipelineIR(documents[0], documents[1] if len(documents) > 1 else {})


class PipelineSourceError(UsageError):
    """A pipeline argument that names nothing loopline can load; ``option`` is the flag
    (or argument) to name in the message."""

    def __init__(self, message: str, option: str = "PIPELINE"):
        super().__init__(message)
        self.option = option


def load(source: object, name: str | None = None, *, target: str = "cpu") -> PipelineIR:
    """IR from a pipeline object, a built-in name, a ``.py`` file (``name`` picks one of
    several pipelines there) or a compiled ``.yaml``; built for ``target`` (cpu or gpu:
    :mod:`loopline.pipelines.cluster.pods`), which compiled IR keeps as it was built."""
    from loopline.pipelines import builtin_pipelines as builtin
    from loopline.pipelines.cluster import pods

    if isinstance(source, PipelineIR):
        return source
    if not isinstance(source, str | Path):
        return compile_pipeline(source)
    path = Path(source)
    compiled = path.suffix in {".yaml", ".yml", ".json"} and path.exists()
    written = path.suffix == ".py" and path.exists()
    if str(source) not in builtin.PIPELINES and not (compiled or written):
        raise PipelineSourceError(
            f"{str(source)!r} is not a built-in pipeline ({', '.join(builtin.PIPELINES)}), "
            "nor an existing .py or .yaml file"
        )
    if name is not None and not written:
        raise PipelineSourceError("--pipeline picks one of a .py file's pipelines", "--pipeline")
    if str(source) in builtin.PIPELINES:
        return builtin.compiled(str(source), target)
    if written:
        with pods.target(target):  # its tasks that call with_settings get the target's
            return compile_pipeline(_pipeline_in_file(path, name))
    if target != "cpu":
        raise PipelineSourceError(
            f"{source} is compiled IR, which keeps the target it was compiled for; "
            f"pass the pipeline's .py file or a built-in name with --target {target}",
            "--target",
        )
    return from_documents(path.read_text())


def compile_pipeline(pipeline: object) -> PipelineIR:
    from kfp import compiler

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(target))
        return from_documents(target.read_text())


def _pipeline_in_file(path: Path, name: str | None = None) -> object:
    from kfp.dsl.graph_component import GraphComponent

    spec = importlib.util.spec_from_file_location(f"loopline_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    # As `python pipeline.py` would: the project's own modules beside it import.
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: say where, without a traceback
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = exc.lineno if isinstance(exc, SyntaxError) else frames[-1].lineno if frames else None
        where = f"{path}, line {line}" if line else str(path)
        raise UsageError(
            f"{where} failed to import: {type(exc).__name__}: {exc}; fix the file"
            + (" or install the module it needs" if isinstance(exc, ImportError) else "")
        ) from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    pipelines = {
        attribute: value
        for attribute, value in vars(module).items()
        if isinstance(value, GraphComponent)
    }
    if name is not None:
        if name not in pipelines:
            raise UsageError(
                f"{path} has no pipeline {name!r}; its pipelines are: "
                f"{', '.join(pipelines) or 'none'}"
            )
        return pipelines[name]
    # Pipelines defined in this file, not imported into it (when it defines any).
    own = {a: p for a, p in pipelines.items() if p.pipeline_func.__module__ == spec.name}
    own = own or pipelines
    if len(own) != 1:
        raise UsageError(
            f"{path} defines {len(own)} pipelines"
            + (
                f" ({', '.join(own)}); name one with --pipeline NAME"
                if own
                else "; add a @dsl.pipeline function"
            )
        )
    return next(iter(own.values()))


def check_supported(ir: PipelineIR) -> None:
    """Refuse, before anything runs, what the local engine cannot execute."""
    problems = []
    for component in ir.spec["components"].values():
        for task_name, task in component.get("dag", {}).get("tasks", {}).items():
            problems += _task_problems(ir, task_name, task)
    for task_name, task in ir.root["dag"]["tasks"].items():
        problems += _task_problems(ir, task_name, task)
    for label, config in (
        ir.platform.get("platforms", {})
        .get("kubernetes", {})
        .get("deploymentSpec", {})
        .get("executors", {})
        .items()
    ):
        for feature in sorted(set(config) - LOCAL_KUBERNETES):
            problems.append(f"kfp-kubernetes {feature} (executor {label}) needs a cluster")
        for name in declared_env(config, required_only=True):
            if name not in os.environ:
                problems.append(
                    f"executor {label} reads {name} from a Kubernetes Secret; locally it comes "
                    f"from the environment: export {name}"
                )
    if problems:
        raise UnsupportedPipeline(
            f"pipeline {ir.name} uses features the local engine cannot run: "
            + "; ".join(sorted(set(problems)))
            + ". Submit it to Kubeflow Pipelines with `loopline submit`."
        )


# kfp-kubernetes settings the local engine honours: secrets as env come from its own
# environment; scheduling hints (node selectors, tolerations, ...) only matter on a cluster.
LOCAL_KUBERNETES = {
    "secretAsEnv",
    "nodeSelector",
    "tolerations",
    "nodeAffinity",
    "podMetadata",
    "imagePullPolicy",
    "imagePullSecret",
    "activeDeadlineSeconds",
    "securityContext",
}


def declared_env(config: dict, *, required_only: bool = False) -> list[str]:
    """The variables an executor's kfp-kubernetes settings put in its environment."""
    return [
        pair["envVar"]
        for secret in config.get("secretAsEnv", [])
        if not (required_only and secret.get("optional"))
        for pair in secret.get("keyToEnv", [])
    ]


def _task_problems(ir: PipelineIR, name: str, task: dict) -> list[str]:
    problems = []
    iterator = task.get("parameterIterator") or task.get("artifactIterator")
    for key, spec in task.get("inputs", {}).get("parameters", {}).items():
        selector = spec.get("parameterExpressionSelector")
        if selector is not None and not is_selector(selector):
            problems.append(f"parameter selector {selector} (task {name}, input {key})")
    component = ir.component(task["componentRef"]["name"])
    if "dag" in component or iterator:
        return problems
    executor = ir.executor(component)
    if "container" in executor:
        container = executor["container"]
        python = any(EXECUTOR_MODULE in part for part in container.get("command", []))
        if not python and container["image"] != PLATFORM_IMAGE:
            problems.append(
                f"container image {container['image']} (task {name}) needs a cluster; "
                f"only Python components and the platform image {PLATFORM_IMAGE} run locally"
            )
    elif "importer" not in executor:
        problems.append(f"executor kind {sorted(executor)} (task {name})")
    return problems
