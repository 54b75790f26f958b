"""Schedules against a real Prefect server and worker (the session's server)."""

import time
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from loopline.core import processes
from loopline.core.settings import load_settings
from loopline.pipelines.cluster.schedules import kfp_cron, schedule_prefect
from loopline.pipelines.ir import load
from loopline.pipelines.local.prefect_server import start_worker
from tests.pipelines.feature_pipelines import chain

pytestmark = pytest.mark.slow


def test_kfp_cron_gains_a_seconds_field():
    assert kfp_cron("0 3 * * *") == "0 0 3 * * *"
    assert kfp_cron("0 0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(ValueError, match="5 fields"):
        kfp_cron("3 * *")


def test_a_short_interval_deployment_produces_a_completed_flow_run(
    prefect_api, tmp_path, monkeypatch
):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    deployment = schedule_prefect(
        load(chain),
        settings,
        interval=timedelta(seconds=5),
        arguments={"x": 2, "text": "tick"},
        name="chain-every-5s",
    )
    with get_client(sync_client=True) as client:  # one run at a time: 2 cores, not 4 runs
        client.update_deployment(deployment, DeploymentUpdate(concurrency_limit=1))
    monkeypatch.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")  # not 10: the test waits on it
    worker = start_worker(prefect_api, tmp_path / "worker.log")
    try:
        state = wait_for_completed_run(deployment, timeout=180)
    finally:
        with get_client(sync_client=True) as client:  # first: no new run starts meanwhile
            client.delete_deployment(deployment)
        # The worker stops within a second or two, but sometimes hangs on SIGTERM until
        # the default 20 s grace ends (seen twice in four runs): no test promise waits on it.
        processes.stop_tree(worker.pid, grace=5)
    assert state == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]


def wait_for_completed_run(deployment_id: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    seen = None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            states = {r.state.type.value for r in runs if r.state}
            if "COMPLETED" in states:
                return "COMPLETED"
            seen = states or seen
            time.sleep(0.5)
    return f"no completed run; states seen: {seen}"


def test_a_kubernetes_pool_schedule_carries_the_ir_and_renders_a_valid_hardened_job(
    prefect_api, tmp_path
):
    """No cluster here: the real Prefect server stores the pool and the deployment, and
    prefect-kubernetes renders the Job its worker would create; the Kubernetes schema
    stands in for the API server."""
    import asyncio
    import json

    import kubernetes_validate
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    from loopline.core import images
    from loopline.core.errors import UsageError
    from loopline.pipelines.cluster.kubernetes_pool import POOL, TEMPLATE_FILE
    from loopline.pipelines.ir import from_documents

    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    ir = load(chain)
    with pytest.raises(UsageError, match="no work pool"):
        schedule_prefect(ir, settings, cron="0 3 * * *", work_pool=POOL)
    template = json.loads(TEMPLATE_FILE.read_text())
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name=POOL, type="kubernetes", base_job_template=template),
            overwrite=True,
        )
        client.create_work_pool(WorkPoolCreate(name="plain", type="process"), overwrite=True)
    with pytest.raises(UsageError, match="'process' pool"):
        schedule_prefect(ir, settings, cron="0 3 * * *", work_pool="plain")

    deployment_id = schedule_prefect(
        ir, settings, cron="0 3 * * *", arguments={"x": 2, "text": "k8s"}, work_pool=POOL
    )
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        pool = client.read_work_pool(POOL)
        client.delete_deployment(deployment_id)
    assert deployment.work_pool_name == POOL
    assert deployment.parameters["enable_cache"] is True  # schedule --no-cache sets False
    assert deployment.schedules[0].schedule.cron == "0 3 * * *"
    assert from_documents(deployment.parameters["ir"]).spec == ir.spec  # no file path
    assert deployment.job_variables["image"] == images.platform("cpu")

    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            pool.base_job_template, deployment.job_variables
        )
    )
    job = configuration.job_manifest
    job["metadata"]["generateName"] = "chain-"  # the worker names it after the flow run
    kubernetes_validate.validate(job, "1.30.0", strict=True)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == images.platform("cpu")
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    secret_refs = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert {"LOOPLINE_DATABASE_URL", "LOOPLINE_TRACKING_URI"} <= secret_refs


def test_the_flow_runs_a_pipeline_handed_over_as_ir_text(prefect_api, tmp_path, monkeypatch):
    from loopline.pipelines.local.prefect_flow import pipeline_flow

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    outputs = pipeline_flow(
        pipeline="chain", ir=load(chain).to_yaml(), arguments={"x": 2, "text": "inline"}
    )
    assert outputs, "the pipeline produced no outputs"


def test_the_checked_in_base_job_template_is_the_one_loopline_builds():
    import json

    from loopline.pipelines.cluster.kubernetes_pool import TEMPLATE_FILE, base_job_template

    assert json.loads(TEMPLATE_FILE.read_text()) == base_job_template(), (
        "run `python -m loopline.pipelines.cluster.kubernetes_pool` to rewrite the template"
    )
