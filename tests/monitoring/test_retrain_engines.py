"""Where a trigger's retraining goes: a Kubeflow run when a KFP host is configured, a
Prefect deployment run when a Prefect server is configured (the in-process run is
covered by test_loop.py); and how a monitor learns how such a submitted run ended."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prefect import get_client
from prefect.states import Completed

from loopline.core.errors import UsageError
from loopline.core.settings import load_settings
from loopline.monitoring import retrain
from loopline.monitoring.retrain import follow_retraining, start_retraining
from loopline.storage.checks import Trigger
from tests.pipelines.test_kubeflow import (  # noqa: F401 - kfp_api is the fixture
    CLUSTER,
    RecordingKfpApi,
    kfp_api,
    posted,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRIGGER = Trigger(
    7, "digits-classifier", "3", 1235, ["data drift: 97%"], "drift.html", "running", 0.0, 0.0, None
)


def test_a_configured_kfp_host_gets_a_retraining_run(kfp_api, monkeypatch, tmp_path):  # noqa: F811
    host, requests = kfp_api
    local = load_settings({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_KFP_HOST": host})
    with pytest.raises(UsageError, match="LOOPLINE_TRACKING_URI"):  # pods cannot reach it
        start_retraining(local, TRIGGER, epochs=5)
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path), "LOOPLINE_KFP_HOST": host, **CLUSTER})
    # The champion's record (the cluster's MLflow, not reachable here): a fine-tuned ResNet.
    monkeypatch.setattr(
        retrain, "champion_hyperparameters", lambda *_: {"arch": "resnet18", "epochs": 30}
    )
    outcome = start_retraining(settings, TRIGGER, epochs=5, labels_through=4321)
    assert outcome == {"engine": "kubeflow", "state": "submitted", "run_id": "run-1", "host": host}
    [run] = posted(requests, "/apis/v2beta1/runs")
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "retraining"
    parameters = run["runtime_config"]["parameters"]
    assert parameters["since"] == 1234 and parameters["epochs"] == 5
    assert parameters["arch"] == "resnet18"  # retrained as it was built
    assert json.loads(parameters["trigger"])["reasons"] == ["data drift: 97%"]
    # The pods' assemble step takes no label sent after the last one the checks judged.
    assert json.loads(parameters["trigger"])["labels_through"] == 4321
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


def test_a_users_pipeline_on_kubeflow_reads_its_dataset_by_artifact_uri(
    kfp_api,  # noqa: F811
    mlflow_server,
    postgres_url,
    tmp_path,
):
    """Kubeflow's pods cannot read the monitor's disk: the retraining file goes to the
    tracking server's artifact store (a real MLflow server on PostgreSQL here; the KFP API
    is a recording fake, as no Kubernetes runs on this machine), and the user's pipeline
    gets its URI, which a process with only the cluster's settings reads back."""
    from loopline.monitoring.policy import RetrainPipeline
    from loopline.storage.database import open_database
    from loopline.storage.feedback import FeedbackStore, Label
    from loopline.storage.predictions import Answer, PredictionLog
    from tests.ml.test_registration import frame, register, rows, save

    host, requests = kfp_api
    cluster = {"LOOPLINE_TRACKING_URI": mlflow_server, "LOOPLINE_DATABASE_URL": postgres_url}
    settings = load_settings(
        {
            "LOOPLINE_HOME": str(tmp_path / "home"),
            "LOOPLINE_KFP_HOST": host,
            "LOOPLINE_RAY_STORAGE": "s3://loopline/ray",
            **cluster,
        }
    )
    data = frame(400, 0)
    model = save(tmp_path / "model", data)
    evaluation, train = rows(tmp_path, "eval", data[300:]), rows(tmp_path, "train", data[:300])
    assert register(settings, tmp_path, model, evaluation, train, name="churn")["promoted"]
    served = frame(30, 1)
    database = open_database(settings, migrate=True)
    try:
        records = served[["x", "colour"]].to_dict("records")
        inputs = [json.dumps(r, separators=(",", ":")).encode() for r in records]
        PredictionLog(database).append(
            Answer("req", "1", inputs, ["no"] * 30, np.zeros((30, 0), dtype=np.float64))
        )
        FeedbackStore(database).attach(
            [Label("req", i, label) for i, label in enumerate(served["label"])]
        )
    finally:
        database.close()
    trigger = dataclasses.replace(TRIGGER, model_name="churn", model_version="1", first_seq=1)
    pipeline = RetrainPipeline(str(EXAMPLES / "churn_sklearn" / "pipeline.py"))
    outcome = start_retraining(settings, trigger, engine="kubeflow", pipeline=pipeline)
    assert outcome["state"] == "submitted"
    [run] = posted(requests, "/apis/v2beta1/runs")
    uri = run["runtime_config"]["parameters"]["dataset"]
    assert uri.startswith("mlflow-artifacts:/") and uri.endswith("/dataset.parquet")
    # A pod: only the cluster's settings, a home of its own, nothing of this machine's.
    read = subprocess.run(
        [sys.executable, "-c", READ_BACK, uri],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "pod"), **cluster},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr[-2000:]
    shape = json.loads(read.stdout.strip().splitlines()[-1])
    assert shape["rows"] == 30 + 300 and shape["columns"] == ["x", "colour", "label"]
    assert shape["recent"] == list(served["label"])  # the labels that came back, first


READ_BACK = """
import json, sys
import pandas as pd
from loopline.ml.retraining_data import dataset_file
frame = pd.read_parquet(dataset_file(sys.argv[1]))
recent = frame["label"][:30].tolist()
print(json.dumps({"rows": len(frame), "columns": list(frame.columns), "recent": recent}))
"""
