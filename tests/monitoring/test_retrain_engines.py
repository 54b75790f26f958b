"""Where a trigger's retraining goes: a Kubeflow run when a KFP host is configured, a
Prefect deployment run when a Prefect server is configured (the in-process run is
covered by test_loop.py)."""

from __future__ import annotations

import json

from prefect import get_client

from components.settings import load_settings
from monitoring.retrain import start_retraining
from monitoring.state import Trigger
from tests.pipelines.test_kubeflow import kfp_api, posted  # noqa: F401 - the fixture

TRIGGER = Trigger(7, "digits-classifier", "3", 1234.5, ["data drift: 97%"], "drift.html",
                  "running", 0.0, 0.0, None)  # fmt: skip


def test_a_configured_kfp_host_gets_a_retraining_run(kfp_api, monkeypatch, tmp_path):  # noqa: F811
    host, requests = kfp_api
    monkeypatch.setenv("LOOPLINE_KFP_HOST", host)
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    outcome = start_retraining(settings, TRIGGER, epochs=5)
    assert outcome == {"engine": "kubeflow", "state": "submitted", "run_id": "run-1", "host": host}
    [run] = posted(requests, "/apis/v2beta1/runs")
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "retraining"
    parameters = run["runtime_config"]["parameters"]
    assert parameters["since"] == 1234.5 and parameters["epochs"] == 5
    assert json.loads(parameters["trigger"])["reasons"] == ["data drift: 97%"]


def test_a_configured_prefect_server_gets_a_deployment_run(prefect_api, monkeypatch, tmp_path):
    monkeypatch.delenv("LOOPLINE_KFP_HOST", raising=False)
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    outcome = start_retraining(settings, TRIGGER)
    assert outcome["engine"] == "deployment" and outcome["state"] == "submitted"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(outcome["run_id"])
        try:
            assert run.parameters["arguments"]["since"] == 1234.5
            assert json.loads(run.parameters["arguments"]["trigger"])["trigger_id"] == 7
            assert run.parameters["pipeline"].endswith("retraining-on-demand.yaml")
        finally:  # no worker may pick it up later in the session
            client.delete_flow_run(run.id)
            client.delete_deployment(run.deployment_id)
