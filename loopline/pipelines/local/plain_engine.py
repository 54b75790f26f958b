"""Runs a compiled pipeline with no orchestrator: the DAG in this process, each task in a
new process, nothing cached. For places where no Prefect server can start, such as the
sandbox that runs a submitted component's example (:mod:`loopline.catalog.example`)."""

from __future__ import annotations

from pathlib import Path

from loopline.core.settings import Settings
from loopline.pipelines.ir import check_supported, load
from loopline.pipelines.local import component_runtime
from loopline.pipelines.local.dag_orchestrator import PipelineFailed, PipelineRun
from loopline.pipelines.local.results import RunResult


class PlainEngine:
    """``envs_home``: where the environments of components that declare packages were
    made (read-only is enough: they are made before, outside the sandbox)."""

    def __init__(self, settings: Settings, envs_home: Path | None = None):
        self.settings = settings
        self.envs_home = envs_home

    def run(self, source: object, arguments: dict | None = None, **_) -> RunResult:
        ir = load(source)
        check_supported(ir)
        run = PipelineRun(
            ir,
            artifact_root=self.settings.artifact_root,
            cache=None,
            runtime=component_runtime.NewProcess(),
            envs_home=self.envs_home,
        )
        result = RunResult(
            succeeded=True,
            pipeline=ir.name,
            run_name=run.run_name,
            run_dir=run.run_dir,
            records=run.records,
        )
        try:
            result.outputs = run.execute(arguments or {})
        except PipelineFailed as exc:
            result.succeeded, result.error = False, str(exc)
        result.task_outputs = run.task_outputs_json()
        return result

    def close(self) -> None: ...
