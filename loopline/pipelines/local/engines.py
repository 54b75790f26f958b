"""Pick the engine that runs a pipeline on this machine: the recorded engine (default) or
kfp.local.

The default runs the DAG itself and records each run in the home's Prefect server without
importing Prefect (:mod:`loopline.pipelines.local.recorded_engine`): live when the server
is up; when it is not (a new home, or one whose server stopped when idle), the run goes
at once, the server is started behind it and records the run once it answers. With an
exported ``PREFECT_API_URL`` (a team's server, Prefect Cloud), a run is a Prefect flow
run (:mod:`loopline.pipelines.local.prefect_engine`).
"""

from __future__ import annotations

import logging
import os
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
    if os.environ.get("PREFECT_API_URL"):  # not this home's: Prefect's own client
        from loopline.pipelines.local.prefect_engine import PrefectEngine

        runner = PrefectEngine(settings, listener=listener, capture_output=capture_output)
    else:
        from loopline.pipelines.local.recorded_engine import RecordedEngine

        server = prefect_server.running(settings)
        if server is None:  # this run goes now; Prefect records it once it is up
            # Its supervisor's own start (~0.3 s) overlaps the run's.
            starting = threading.Thread(target=_start_server, args=(settings,), daemon=True)
            starting.start()
        runner = RecordedEngine(
            settings,
            server.api_url if server else None,
            listener=listener,
            capture_output=capture_output,
        )
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
