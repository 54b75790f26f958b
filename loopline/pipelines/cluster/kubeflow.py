"""Kubeflow Pipelines: submit a run or a recurring run of the same compiled IR via kfp.Client,
and follow a run's state. Settings that only work on this machine are refused first."""

from __future__ import annotations

import tempfile
from pathlib import Path

from loopline.core.settings import Settings
from loopline.pipelines.cluster.pods import check_reachable
from loopline.pipelines.cluster.schedules import kfp_cron
from loopline.pipelines.ir import PipelineIR

DEFAULT_EXPERIMENT = "loopline"
FINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


def submit(
    ir: PipelineIR,
    host: str,
    *,
    arguments: dict,
    settings: Settings,
    experiment: str = DEFAULT_EXPERIMENT,
) -> str:
    """Create a run on the Kubeflow Pipelines API at ``host``; return the run id."""
    from kfp import Client

    check_reachable(settings)
    client = Client(host=host)
    with tempfile.TemporaryDirectory() as tmp:
        package = ir.write(Path(tmp) / f"{ir.name}.yaml")
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, run_name=ir.name
        )
    return run.run_id


def schedule(
    ir: PipelineIR,
    host: str,
    *,
    cron: str,
    arguments: dict,
    settings: Settings,
    name: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    enable_cache: bool = True,
) -> str:
    """Create a recurring run on Kubeflow Pipelines; return its id. ``enable_cache=False``
    turns Kubeflow's cache off for every run it starts; otherwise each task's own
    caching option holds."""
    from kfp import Client

    check_reachable(settings)
    client = Client(host=host)
    experiment_id = client.create_experiment(experiment).experiment_id
    with tempfile.TemporaryDirectory() as tmp:
        package = ir.write(Path(tmp) / f"{ir.name}.yaml")
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name or ir.name,
            cron_expression=kfp_cron(cron),
            pipeline_package_path=str(package),
            params=arguments,
            enable_caching=None if enable_cache else False,
        )
    return recurring.recurring_run_id


def run_state(host: str, run_id: str) -> str:
    """A run's state on Kubeflow Pipelines: PENDING, RUNNING, SUCCEEDED, FAILED, ..."""
    from kfp import Client

    return str(Client(host=host).get_run(run_id).state)
