"""Recurring pipeline runs: Prefect deployments on one machine, recurring runs on Kubeflow.

A schedule freezes the pipeline as compiled IR under ``LOOPLINE_HOME/schedules`` so that
later edits to the source do not change what the schedule runs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from components.settings import Settings
from pipelines.compile import write_ir
from pipelines.ir import PipelineIR, check_supported
from pipelines.prefect_server import WORK_POOL, ensure_work_pool

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "pipelines/prefect_flow.py:pipeline_flow"


def schedule_prefect(
    ir: PipelineIR,
    settings: Settings,
    *,
    cron: str | None = None,
    interval: timedelta | None = None,
    arguments: dict | None = None,
    name: str | None = None,
) -> str:
    """Create (or update) a Prefect deployment that runs ``ir`` on a schedule; return its id.
    With neither ``cron`` nor ``interval`` it runs only when asked (``run_deployment``)."""
    from pipelines.prefect_flow import pipeline_flow

    if cron is not None and interval is not None:
        raise ValueError("give at most one of cron or interval")
    check_supported(ir)
    name = name or ir.name
    frozen = write_ir(ir, settings.home / "schedules" / f"{_slug(name)}.yaml")
    ensure_work_pool()
    source = pipeline_flow.from_source(source=str(PROJECT_ROOT), entrypoint=ENTRYPOINT)
    return str(
        source.deploy(
            name=name,
            work_pool_name=WORK_POOL,
            cron=cron,
            interval=interval,
            parameters={"pipeline": str(frozen), "arguments": arguments or {}},
            build=False,
            push=False,
            print_next_steps=False,
        )
    )


def run_prefect_deployment(ir: PipelineIR, settings: Settings, arguments: dict) -> str:
    """Start one run of ``ir`` through an on-demand deployment (a worker picks it up);
    return the flow run id."""
    from prefect.deployments import run_deployment

    name = f"{ir.name}-on-demand"
    schedule_prefect(ir, settings, name=name)
    run = run_deployment(
        f"loopline-pipeline/{name}", parameters={"arguments": arguments}, timeout=0
    )
    return str(run.id)


def kfp_cron(cron: str) -> str:
    """Kubeflow's cron has a seconds field: ``0 3 * * *`` -> ``0 0 3 * * *``."""
    fields = cron.split()
    if len(fields) == 5:
        return "0 " + cron
    if len(fields) == 6:
        return cron
    raise ValueError(f"cron {cron!r} needs 5 fields (minute hour day month weekday)")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
