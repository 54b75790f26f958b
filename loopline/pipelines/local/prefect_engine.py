"""The Prefect engine: each pipeline run is a Prefect flow run, each KFP task a task run.

Retries come from the task's ``set_retry`` policy; metrics, confusion matrices and HTML
reports become Prefect artifacts, so the Prefect UI shows them beside the run. Without an
exported ``PREFECT_API_URL``, runs go to the home's Prefect server (``prefect_server``).
"""

from __future__ import annotations

import logging

from loopline.core.settings import Settings
from loopline.pipelines.ir import check_supported, load
from loopline.pipelines.local import component_runtime, prefect_rest, prefect_server
from loopline.pipelines.local.cache import TaskCache
from loopline.pipelines.local.dag_orchestrator import PipelineRun
from loopline.pipelines.local.results import RunListener, RunResult, jsonable
from loopline.pipelines.local.scope import coerce_arguments

RUNTIMES = {"process": component_runtime.ProcessPool, "inprocess": component_runtime.InProcess}


class PrefectEngine:
    """Runs compiled pipelines as Prefect flows; owns the worker pool for its lifetime."""

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: str = "process",
        listener: RunListener | None = None,
        capture_output: bool = True,
    ):
        self.settings = settings
        if runtime == "process" and capture_output:
            self.runtime = component_runtime.ProcessPool(
                between_tasks=settings.logs / component_runtime.WORKERS_LOG
            )
        else:
            self.runtime = RUNTIMES[runtime]()
        self.listener = listener
        self.capture_output = capture_output

    def run(
        self, source: object, arguments: dict | None = None, *, enable_cache: bool = True
    ) -> RunResult:
        ir = load(source)
        check_supported(ir)
        coerce_arguments(ir, arguments or {})  # bad arguments fail before a flow starts
        self.runtime.warm()  # on a second core while Prefect loads and the flow starts
        run = PipelineRun(
            ir,
            artifact_root=self.settings.artifact_root,
            cache=TaskCache(self.settings.home / "cache") if enable_cache else None,
            runtime=self.runtime,
            task_wrapper=_prefect_task,
            listener=self.listener,
            capture_output=self.capture_output,
        )
        with prefect_server.api(self.settings) as api_url, _using(api_url):
            state = _flow(run)(arguments or {}, return_state=True)
        result = RunResult(
            succeeded=state.is_completed(),
            pipeline=ir.name,
            run_name=run.run_name,
            run_dir=run.run_dir,
            records=run.records,
            flow_run_id=str(state.state_details.flow_run_id),
        )
        result.task_outputs = run.task_outputs_json()  # finished tasks, even in a failed run
        value = state.result(raise_on_failure=False)
        if isinstance(value, BaseException):
            result.error = str(value)
            result.failed_task = getattr(value, "task", None)
        else:
            result.outputs = value
        return result

    def close(self) -> None:
        self.runtime.shutdown()


def _using(api_url: str):
    """Point this process's Prefect client at ``api_url``, even if Prefect loaded earlier.

    Flow-run heartbeats are off: they only feed automations that loopline does not set
    up, and waiting for the heartbeat thread costs up to a second at the end of each run.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    return temporary_settings({PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _flow(run: PipelineRun):
    from prefect import flow

    @flow(name=run.ir.name, flow_run_name=run.run_name, persist_result=False, log_prints=True)
    def pipeline(arguments: dict) -> dict:
        _attach_loopline_logs()
        return jsonable(run.execute(arguments))

    return pipeline


def _prefect_task(name: str, task_spec: dict, fn):
    """Wrap a leaf call as a Prefect task named after the KFP task, with its retry policy."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    retries, delays = retry_policy(task_spec)

    def leaf(*args):
        outputs = fn(*args)
        if not outputs.from_cache:  # published when they were made
            _publish(name, outputs.artifacts)
        return outputs

    return task(
        leaf,
        name=name,
        task_run_name=name,
        retries=retries,
        retry_delay_seconds=delays,
        persist_result=False,
        cache_policy=NO_CACHE,
        log_prints=True,
    )


def retry_policy(task_spec: dict) -> tuple[int, list[float]]:
    """A KFP task's ``set_retry``: how many retries, and the wait before each."""
    policy = task_spec.get("retryPolicy", {})
    retries = int(policy.get("maxRetryCount", 0))
    return retries, _delays(policy, retries)


def _delays(policy: dict, retries: int) -> list[float]:
    first = _seconds(policy.get("backoffDuration", "0s"))
    factor = float(policy.get("backoffFactor", 2.0))
    cap = _seconds(policy.get("backoffMaxDuration", "3600s"))
    return [min(first * factor**i, cap) for i in range(retries)] or [0]


def _seconds(duration: str) -> float:
    return float(duration.rstrip("s") or 0)


def _publish(task_name: str, artifacts: dict) -> None:
    """Metrics tables, confusion matrices and report links as Prefect artifacts of the task
    run (:func:`prefect_rest.artifacts`: the same as a run the recorded engine records)."""
    made = prefect_rest.artifacts(task_name, artifacts)
    if not made:
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.context import TaskRunContext

    task_run = TaskRunContext.get().task_run
    with get_client(sync_client=True) as client:
        for artifact in made:
            client.create_artifact(
                ArtifactCreate(
                    **artifact, flow_run_id=task_run.flow_run_id, task_run_id=task_run.id
                )
            )


def _attach_loopline_logs() -> None:
    """Send loopline's own log lines (cache hits, skips, warnings) to the Prefect UI too;
    they also reach the root logger's handler (a log file, or the terminal with --verbose)."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("loopline")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())
