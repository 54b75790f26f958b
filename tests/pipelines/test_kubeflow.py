"""Kubeflow submission through kfp.Client, against a recording HTTP fake of the KFP API.

No Kubeflow cluster can run on this machine, so this fake stands in for the API server:
it records each request and answers with the fields kfp.Client reads. It checks what we
send (the compiled IR, the arguments, the cron), not how Kubeflow would run it.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopline.core.settings import load_settings
from loopline.pipelines.cluster import kubeflow
from loopline.pipelines.ir import load
from tests.pipelines.feature_pipelines import chain


class RecordingKfpApi(BaseHTTPRequestHandler):
    requests: list[dict] = []
    run_state = "RUNNING"  # what GET /runs/run-1 answers; a test moves it on

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._record(None)
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._answer({"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._answer({"experiments": [], "total_size": 0})
        if self.path.startswith("/apis/v2beta1/runs/run-1"):
            return self._answer({"run_id": "run-1", "state": RecordingKfpApi.run_state})
        self._answer({"error": "not found"}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self._record(body)
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._answer({"experiment_id": "exp-1", "display_name": body["display_name"]})
        if self.path.startswith("/apis/v2beta1/runs"):
            return self._answer({"run_id": "run-1", "display_name": body["display_name"]})
        if self.path.startswith("/apis/v2beta1/recurringruns"):
            return self._answer({"recurring_run_id": "rr-1", "display_name": body["display_name"]})
        self._answer({"error": "not found"}, 404)

    def _record(self, body):
        RecordingKfpApi.requests.append({"method": self.command, "path": self.path, "body": body})

    def _answer(self, payload, status=200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def kfp_api():
    RecordingKfpApi.requests = []
    RecordingKfpApi.run_state = "RUNNING"
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", RecordingKfpApi.requests
    server.shutdown()


CLUSTER = {  # settings a cluster's pods can reach (what the loopline-settings Secret holds)
    "LOOPLINE_TRACKING_URI": "http://mlflow.loopline:5000",
    "LOOPLINE_DATABASE_URL": "postgresql://loopline@postgres.loopline:5432/loopline",
    "LOOPLINE_RAY_STORAGE": "s3://loopline/ray",
}


@pytest.fixture
def cluster_settings(tmp_path):
    return load_settings({"LOOPLINE_HOME": str(tmp_path), **CLUSTER})


def posted(requests, prefix):
    return [r["body"] for r in requests if r["method"] == "POST" and r["path"].startswith(prefix)]


def test_submit_sends_the_compiled_ir_and_arguments(kfp_api, cluster_settings):
    host, requests = kfp_api
    ir = load(chain)
    assert kubeflow.submit(ir, host, arguments={"x": 5}, settings=cluster_settings) == "run-1"
    [run] = posted(requests, "/apis/v2beta1/runs")
    assert run["pipeline_spec"]["root"] == ir.spec["root"]
    assert run["runtime_config"]["parameters"] == {"x": 5}
    assert run["experiment_id"] == "exp-1"


def test_schedule_creates_a_recurring_run_with_kfp_cron(kfp_api, cluster_settings):
    host, requests = kfp_api
    ir = load(chain)
    scheduled = kubeflow.schedule(
        ir, host, cron="0 3 * * *", arguments={"x": 1}, settings=cluster_settings
    )
    assert scheduled == "rr-1"
    [recurring] = posted(requests, "/apis/v2beta1/recurringruns")
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert recurring["pipeline_spec"]["pipelineInfo"]["name"] == "chain"
    assert recurring["runtime_config"]["parameters"] == {"x": 1}
    assert posted(requests, "/apis/v2beta1/experiments")[0]["display_name"] == "loopline"


def test_the_cli_submits_the_built_in_training_pipeline_with_its_settings_secret(
    kfp_api, home, monkeypatch
):
    from typer.testing import CliRunner

    from loopline.cli import app

    host, requests = kfp_api
    # This machine's files: refused before anything is sent, naming the setting and the fix.
    local = CliRunner().invoke(app, ["submit", "training", "--host", host])
    assert local.exit_code == 2 and "LOOPLINE_TRACKING_URI=sqlite:" in local.output
    assert "loopline-settings Secret's tracking-uri key" in " ".join(local.output.split())
    assert not posted(requests, "/apis/v2beta1/runs")
    for name, value in CLUSTER.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["submit", "training", "--host", host, "--param", "epochs=3"])
    assert result.exit_code == 0, result.output
    [run] = posted(requests, "/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"] == {"epochs": 3}
    # With a platform spec, KFP's API takes {"pipeline_spec": ..., "platform_spec": ...}.
    spec, platform = run["pipeline_spec"]["pipeline_spec"], run["pipeline_spec"]["platform_spec"]
    assert "train" in spec["root"]["dag"]["tasks"]
    # Every task of the pipeline reads the platform's settings from the Secret.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == 6  # ingest, validate, train, evaluate, register, package
    for config in executors.values():
        [secret] = config["secretAsEnv"]
        assert secret["secretName"] == "loopline-settings" and secret["optional"] is True
        assert {p["envVar"] for p in secret["keyToEnv"]} >= {
            "LOOPLINE_TRACKING_URI",
            "LOOPLINE_DATABASE_URL",
            "LOOPLINE_RAY_ADDRESS",
        }
