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
from loopline.pipelines.local import component_runtime, prefect_server, run_history
from loopline.pipelines.local.cache import TaskCache
from loopline.pipelines.local.plain_engine import PlainEngine
from loopline.pipelines.local.prefect_engine import retry_policy
from loopline.pipelines.local.results import RunListener, RunResult


class DeferredEngine(PlainEngine):
    def __init__(
        self,
        settings: Settings,
        *,
        listener: RunListener | None = None,
        capture_output: bool = True,
    ):
        between = settings.logs / component_runtime.WORKERS_LOG if capture_output else None
        super().__init__(
            settings,
            runtime=component_runtime.ProcessPool(between_tasks=between),
            task_wrapper=_retrying,
            listener=listener,
            capture_output=capture_output,
        )

    def run(
        self, source: object, arguments: dict | None = None, *, enable_cache: bool = True
    ) -> RunResult:
        arguments = arguments or {}
        self.cache = TaskCache(self.settings.home / "cache") if enable_cache else None
        self.runtime.warm()
        started = time.time()
        # Leased: the server started meanwhile stays up, however long this run, to record it.
        with prefect_server.lease(self.settings):
            result = super().run(source, arguments)
            run_history.defer(self.settings.prefect_home, result, arguments, started)
        return result


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
