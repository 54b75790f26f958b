"""The flow that Prefect deployments run: a compiled pipeline, with its arguments.

Deployments point here (``loopline/pipelines/local/prefect_flow.py:pipeline_flow``); each run executes
the pipeline as a child flow named after it, so the UI shows both. On one machine the
pipeline is a frozen IR file; a deployment on the Kubernetes pool carries the IR itself
(``ir``), because a Job's pod cannot read the scheduler's files.
"""

from __future__ import annotations

from prefect import flow

from loopline.core.settings import load_settings
from loopline.pipelines.local.prefect_engine import PrefectEngine


@flow(name="loopline-pipeline", persist_result=False, log_prints=True)
def pipeline_flow(
    pipeline: str, arguments: dict | None = None, enable_cache: bool = True, ir: str | None = None
) -> dict:
    from loopline.pipelines.ir import from_documents

    engine = PrefectEngine(load_settings())
    try:
        source = from_documents(ir) if ir else pipeline
        result = engine.run(source, arguments or {}, enable_cache=enable_cache)
    finally:
        engine.close()
    if not result.succeeded:
        raise RuntimeError(f"pipeline {result.pipeline} failed: {result.error}")
    return result.outputs
