"""Runs a compiled pipeline with no orchestrator: the DAG in this process, each task in a
new process (or the given runtime), cached only when given a cache. For places where no
Prefect server can start, such as the sandbox that runs a submitted component's example
(:mod:`loopline.catalog.example`), and the base of ``loopline run``'s engine, which
records its runs in Prefect without Prefect (:mod:`loopline.pipelines.local.recorded_engine`)."""

from __future__ import annotations

from pathlib import Path

from loopline.core.settings import Settings
from loopline.pipelines.ir import check_supported, load
from loopline.pipelines.local import component_runtime
from loopline.pipelines.local.cache import TaskCache
from loopline.pipelines.local.dag_orchestrator import PipelineFailed, PipelineRun, TaskWrapper
from loopline.pipelines.local.results import RunListener, RunResult, jsonable
from loopline.pipelines.local.scope import coerce_arguments


class PlainEngine:
    """``envs_home``: where the environments of components that declare packages were
    made (read-only is enough: they are made before, outside the sandbox)."""

    def __init__(
        self,
        settings: Settings,
        envs_home: Path | None = None,
        *,
        runtime: component_runtime.Runtime | None = None,
        task_wrapper: TaskWrapper | None = None,
        listener: RunListener | None = None,
        capture_output: bool = True,
    ):
        self.settings = settings
        self.envs_home = envs_home
        self.runtime = runtime or component_runtime.NewProcess()
        self.task_wrapper = task_wrapper
        self.listener = listener
        self.capture_output = capture_output
        self.cache: TaskCache | None = None

    def run(self, source: object, arguments: dict | None = None, **_) -> RunResult:
        arguments = arguments or {}
        return self.execute(self.prepare(source, arguments), arguments)

    def prepare(
        self,
        source: object,
        arguments: dict,
        *,
        task_wrapper: TaskWrapper | None = None,
        listener: RunListener | None = None,
    ) -> PipelineRun:
        """The run of ``source``, not started; bad arguments fail here, before any task."""
        ir = load(source)
        check_supported(ir)
        coerce_arguments(ir, arguments)
        return PipelineRun(
            ir,
            artifact_root=self.settings.artifact_root,
            cache=self.cache,
            runtime=self.runtime,
            envs_home=self.envs_home,
            task_wrapper=task_wrapper or self.task_wrapper,
            listener=listener or self.listener,
            capture_output=self.capture_output,
        )

    def execute(self, run: PipelineRun, arguments: dict) -> RunResult:
        result = RunResult(
            succeeded=True,
            pipeline=run.ir.name,
            run_name=run.run_name,
            run_dir=run.run_dir,
            records=run.records,
        )
        try:
            result.outputs = jsonable(run.execute(arguments))
        except PipelineFailed as exc:
            result.succeeded, result.error, result.failed_task = False, str(exc), exc.task
        result.task_outputs = run.task_outputs_json()
        return result

    def close(self) -> None:
        self.runtime.shutdown()
