"""A run that does not wait for its home's Prefect server: the first run in a new home,
or the first after the server stopped when idle.

The server is started in the background for the commands that follow, and this run goes
at once: the same DAG, task processes, cache and ``set_retry`` policies as under Prefect,
without Prefect's flow-run bookkeeping. What it did is recorded in the server once the
server is up (:mod:`loopline.pipelines.local.run_history`). Metrics tables and reports
stay in the run's folder and its summary; they are not posted as Prefect artifacts.
"""

from __future__ import annotations

import time

from loopline.core.settings import Settings
from loopline.pipelines.ir import check_supported, load
from loopline.pipelines.local import component_runtime, run_history
from loopline.pipelines.local.cache import TaskCache
from loopline.pipelines.local.dag_orchestrator import PipelineFailed, PipelineRun
from loopline.pipelines.local.prefect_engine import retry_policy
from loopline.pipelines.local.results import RunListener, RunResult
from loopline.pipelines.local.scope import coerce_arguments


class DeferredEngine:
    def __init__(
        self,
        settings: Settings,
        *,
        listener: RunListener | None = None,
        capture_output: bool = True,
    ):
        self.settings = settings
        between = settings.logs / component_runtime.WORKERS_LOG if capture_output else None
        self.runtime = component_runtime.ProcessPool(between_tasks=between)
        self.listener = listener
        self.capture_output = capture_output

    def run(
        self, source: object, arguments: dict | None = None, *, enable_cache: bool = True
    ) -> RunResult:
        ir = load(source)
        check_supported(ir)
        arguments = arguments or {}
        coerce_arguments(ir, arguments)
        self.runtime.warm()
        started = time.time()
        run = PipelineRun(
            ir,
            artifact_root=self.settings.artifact_root,
            cache=TaskCache(self.settings.home / "cache") if enable_cache else None,
            runtime=self.runtime,
            task_wrapper=_retrying,
            listener=self.listener,
            capture_output=self.capture_output,
        )
        result = RunResult(
            succeeded=True,
            pipeline=ir.name,
            run_name=run.run_name,
            run_dir=run.run_dir,
            records=run.records,
        )
        try:
            result.outputs = run.execute(arguments)
        except PipelineFailed as exc:
            result.succeeded, result.error, result.failed_task = False, str(exc), exc.task
        result.task_outputs = run.task_outputs_json()
        run_history.defer(self.settings.prefect_home, result, arguments, started)
        return result

    def close(self) -> None:
        self.runtime.shutdown()


def _retrying(name: str, task_spec: dict, fn):
    """The task's ``set_retry`` policy, kept as Prefect keeps it: retried after each wait."""
    retries, delays = retry_policy(task_spec)
    if not retries:
        return fn

    def leaf(*args):
        for attempt in range(retries + 1):
            try:
                return fn(*args)
            except Exception:
                if attempt == retries:
                    raise
                time.sleep(delays[min(attempt, len(delays) - 1)])

    return leaf
