"""Schedules against a real Prefect server and worker (the session's server)."""

import time
from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from components import processes
from components.settings import load_settings
from pipelines.ir import load
from pipelines.prefect_server import start_worker
from pipelines.schedules import kfp_cron, schedule_prefect
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
        load(chain), settings, interval=timedelta(seconds=5), arguments={"x": 2, "text": "tick"},
        name="chain-every-5s",
    )  # fmt: skip
    monkeypatch.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")  # not 10: the test waits on it
    worker = start_worker(prefect_api, tmp_path / "worker.log")
    try:
        state = wait_for_completed_run(deployment, timeout=180)
    finally:
        processes.stop_tree(worker.pid)
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment)
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
            time.sleep(1)
    return f"no completed run; states seen: {seen}"
