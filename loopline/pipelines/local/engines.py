"""Pick the engine that runs a pipeline on this machine: Prefect (default) or kfp.local.

With Prefect, a run that would wait for its home's server to start (a new home, or one
whose server stopped when idle) goes at once and is recorded in Prefect afterwards
(:mod:`loopline.pipelines.local.deferred_engine`); a warm home's run is a Prefect flow run.
"""

from __future__ import annotations

import logging
import threading

from loopline.core.settings import Settings
from loopline.pipelines.local.results import RunListener, RunResult


def run_pipeline(
    source: object,
    arguments: dict,
    settings: Settings,
    *,
    engine: str = "prefect",
    enable_cache: bool = True,
    listener: RunListener | None = None,
    capture_output: bool = True,
) -> RunResult:
    if engine == "kfp-local":
        from loopline.pipelines.local.kfp_local import run_local

        return run_local(source, arguments, settings)
    from loopline.pipelines.local import prefect_server

    starting = None
    if prefect_server.is_cold(settings):  # this run goes now; Prefect records it later
        from loopline.pipelines.local.deferred_engine import DeferredEngine

        # Its supervisor's own start (~0.3 s) overlaps the run's.
        starting = threading.Thread(target=_start_server, args=(settings,), daemon=True)
        starting.start()
        runner = DeferredEngine(settings, listener=listener, capture_output=capture_output)
    else:
        from loopline.pipelines.local.prefect_engine import PrefectEngine

        runner = PrefectEngine(settings, listener=listener, capture_output=capture_output)
    try:
        return runner.run(source, arguments, enable_cache=enable_cache)
    finally:
        runner.close()
        if starting is not None:
            starting.join()


def _start_server(settings: Settings) -> None:
    """The home's server, started for the commands that follow; this run needs none, so a
    failure to start it is logged and left to the next command to meet."""
    from loopline.pipelines.local import prefect_server

    try:
        prefect_server.start_in_background(settings)
    except Exception:
        logging.getLogger("loopline").exception("could not start this home's Prefect server")
