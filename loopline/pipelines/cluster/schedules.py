"""Recurring pipeline runs: Prefect deployments on one machine, recurring runs on Kubeflow.

A schedule freezes the pipeline as compiled IR under ``LOOPLINE_HOME/schedules`` so that
later edits to the source do not change what the schedule runs.
"""

from __future__ import annotations

import re
from datetime import timedelta

from loopline.core import images
from loopline.core.errors import UsageError
from loopline.core.package import installed_root
from loopline.core.settings import Settings
from loopline.pipelines.ir import PipelineIR, check_supported
from loopline.pipelines.local.prefect_server import WORK_POOL, ensure_work_pool

ENTRYPOINT = "loopline/pipelines/local/prefect_flow.py:pipeline_flow"
IMAGE_ROOT = "/opt/venv/lib/python3.11/site-packages"  # the installed package, in the image


def schedule_prefect(
    ir: PipelineIR,
    settings: Settings,
    *,
    cron: str | None = None,
    interval: timedelta | None = None,
    arguments: dict | None = None,
    name: str | None = None,
    work_pool: str | None = None,
    enable_cache: bool = True,
) -> str:
    """Create (or update) a Prefect deployment that runs ``ir`` on a schedule; return its id.
    With neither ``cron`` nor ``interval`` it runs only when asked (``run_deployment``).
    ``work_pool`` names a Kubernetes pool to run it as Jobs there; by default this home's
    process pool runs it (``loopline server``). ``enable_cache=False`` runs every task of
    every scheduled run again (``loopline schedule --no-cache``)."""
    from loopline.pipelines.local.prefect_flow import pipeline_flow

    if cron is not None and interval is not None:
        raise ValueError("give at most one of cron or interval")
    check_supported(ir)
    name = name or ir.name
    if work_pool not in (None, WORK_POOL):
        return _schedule_on_kubernetes(
            ir, name, work_pool, cron, interval, arguments or {}, enable_cache
        )
    frozen = ir.write(settings.home / "schedules" / f"{_slug(name)}.yaml")
    ensure_work_pool()
    source = pipeline_flow.from_source(source=str(installed_root()), entrypoint=ENTRYPOINT)
    return str(
        source.deploy(
            name=name,
            work_pool_name=WORK_POOL,
            cron=cron,
            interval=interval,
            parameters={
                "pipeline": str(frozen),
                "arguments": arguments or {},
                "enable_cache": enable_cache,
            },
            build=False,
            push=False,
            print_next_steps=False,
        )
    )


def _schedule_on_kubernetes(ir, name, work_pool, cron, interval, arguments, enable_cache) -> str:
    """A deployment whose runs are Jobs in the platform image, carrying the IR itself."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.exceptions import ObjectNotFound

    from loopline.pipelines.cluster.kubernetes_pool import POOL_TYPE, TEMPLATE_FILE

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(work_pool)
        except ObjectNotFound:
            raise UsageError(
                f"Prefect has no work pool {work_pool!r}; the worker in infra/k8s creates it "
                f"(prefect worker start --pool {work_pool} --type {POOL_TYPE} "
                f"--base-job-template {TEMPLATE_FILE.name}), or name an existing pool"
            ) from None
        if pool.type != POOL_TYPE:
            raise UsageError(
                f"work pool {work_pool!r} is a {pool.type!r} pool; loopline schedules on "
                f"{POOL_TYPE!r} pools (or on this home's own pool without --work-pool)"
            )
        schedule = CronSchedule(cron=cron) if cron else IntervalSchedule(interval=interval)
        flow_id = client.create_flow_from_name("loopline-pipeline")
        deployment = client.create_deployment(
            flow_id,
            name,
            work_pool_name=work_pool,
            entrypoint=ENTRYPOINT,
            path=IMAGE_ROOT,
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_ROOT}}
            ],
            parameters={
                "pipeline": ir.name,
                "ir": ir.to_yaml(),
                "arguments": arguments,
                "enable_cache": enable_cache,
            },
            job_variables={"image": images.platform("cpu")},
            schedules=[DeploymentScheduleCreate(schedule=schedule)] if cron or interval else [],
        )
    return str(deployment)


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
