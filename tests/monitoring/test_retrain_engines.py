"""Where a trigger's retraining goes: a Kubeflow run when a KFP host is configured, a
Prefect deployment run when a Prefect server is configured (the in-process run is
covered by test_loop.py); and how a monitor learns how such a submitted run ended."""

from __future__ import annotations

import dataclasses
import json

import pytest
from prefect import get_client
from prefect.states import Completed

from loopline.core.errors import UsageError
from loopline.core.settings import load_settings
from loopline.monitoring.retrain import follow_retraining, start_retraining
from loopline.storage.checks import Trigger
from tests.pipelines.test_kubeflow import (  # noqa: F401 - kfp_api is the fixture
    CLUSTER,
    RecordingKfpApi,
    kfp_api,
    posted,
)

TRIGGER = Trigger(
    7, "digits-classifier", "3", 1235, ["data drift: 97%"], "drift.html", "running", 0.0, 0.0, None
)


def test_a_configured_kfp_host_gets_a_retraining_run(kfp_api, monkeypatch, tmp_path):  # noqa: F811
    host, requests = kfp_api
    local = load_settings({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_KFP_HOST": host})
    with pytest.raises(UsageError, match="LOOPLINE_TRACKING_URI"):  # pods cannot reach it
        start_retraining(local, TRIGGER, epochs=5)
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_KFP_HOST": host, **CLUSTER})
    outcome = start_retraining(settings, TRIGGER, epochs=5)
    assert outcome == {"engine": "kubeflow", "state": "submitted", "run_id": "run-1", "host": host}
    [run] = posted(requests, "/apis/v2beta1/runs")
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "retraining"
    parameters = run["runtime_config"]["parameters"]
    assert parameters["since"] == 1234 and parameters["epochs"] == 5
    assert json.loads(parameters["trigger"])["reasons"] == ["data drift: 97%"]
    # A monitor follows the submitted run until it ends, then records how.
    submitted = dataclasses.replace(TRIGGER, state="submitted", run_ref=outcome)
    assert follow_retraining(settings, submitted) is None  # still RUNNING
    RecordingKfpApi.run_state = "FAILED"
    assert follow_retraining(settings, submitted)["state"] == "failed"


def test_a_configured_prefect_server_gets_a_deployment_run(prefect_api, monkeypatch, tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    outcome = start_retraining(settings, TRIGGER)
    assert outcome["engine"] == "deployment" and outcome["state"] == "submitted"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(outcome["run_id"])
        try:
            assert run.parameters["arguments"]["since"] == 1234
            assert json.loads(run.parameters["arguments"]["trigger"])["trigger_id"] == 7
            assert run.parameters["pipeline"].endswith("retraining-on-demand.yaml")
            submitted = dataclasses.replace(TRIGGER, state="submitted", run_ref=outcome)
            assert follow_retraining(settings, submitted) is None  # scheduled, not ended
            # It ends; the version it registered (tagged with the trigger) says how.
            client.set_flow_run_state(run.id, Completed(), force=True)
            assert follow_retraining(settings, submitted)["error"].startswith(
                "the run ended without"
            )
            tag_a_version(settings, trigger_id="7", promoted="true")
            ended = follow_retraining(settings, submitted)
            assert ended["state"] == "promoted" and ended["version"] == "1"
        finally:  # no worker may pick it up later in the session
            client.delete_flow_run(run.id)
            client.delete_deployment(run.deployment_id)


def tag_a_version(settings, *, trigger_id: str, promoted: str) -> None:
    """A registered version as a retraining leaves it: tagged with its trigger."""
    from loopline.storage.registry import Registry

    registry = Registry(settings)
    run = registry.start_run("digits-classifier", params={}, tags={})
    registry.create_version(
        "digits-classifier",
        source="file:///nowhere",
        run_id=run,
        tags={
            "loopline.trigger_id": trigger_id,
            "gate.promoted": promoted,
        },
    )
