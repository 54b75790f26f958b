"""What a warm home's run shows in Prefect while it runs: a retried task AwaitingRetry
through its wait, as Prefect's own engine shows it, and the artifacts a finished task made,
as strict JSON, without an artifact that cannot be built failing the task."""

import json
from datetime import datetime

import httpx
import pytest
from kfp import dsl
from kfp.dsl import ClassificationMetrics, Metrics, Output

from loopline.core.settings import load_settings
from loopline.pipelines.local import prefect_rest
from loopline.pipelines.local.recorded_engine import RecordedEngine
from tests.pipelines.engine_pipelines import flaky
from tests.pipelines.test_first_run import flow_runs, task_runs

WAIT_S = 3  # the retry's wait; states are stamped as the server gets them, late under load


@dsl.pipeline
def waiting_retry(marker: str) -> int:
    return flaky(marker=marker).set_retry(num_retries=1, backoff_duration=f"{WAIT_S}s").output


@dsl.component
def half_right(metrics: Output[Metrics]):
    metrics.log_metric("accuracy", 0.5)


@dsl.component
def lopsided(matrix: Output[ClassificationMetrics]):
    """A confusion matrix with two classes and one row, as a hand-written one may be."""
    matrix.metadata["confusionMatrix"] = {
        "annotationSpecs": [{"displayName": "cat"}, {"displayName": "dog"}],
        "rows": [{"row": [3, 1]}],
    }


@dsl.pipeline
def odd_metrics():
    half_right()
    lopsided()


def reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


@pytest.fixture
def live(tmp_path, prefect_api):
    runner = RecordedEngine(load_settings({"LOOPLINE_HOME": str(tmp_path / "home")}), prefect_api)
    yield runner
    runner.close()


def test_a_retried_task_is_awaiting_retry_through_its_wait(live, tmp_path, prefect_api):
    result = live.run(waiting_retry, {"marker": str(tmp_path / "attempts")}, enable_cache=False)
    assert result.succeeded, result.error
    [run] = flow_runs(prefect_api, result.run_name)
    task = task_runs(prefect_api, run["id"])["flaky"]
    answer = httpx.get(
        f"{prefect_api}/task_run_states/", params={"task_run_id": task["id"]}, timeout=30
    )
    held = sorted(answer.json(), key=lambda s: s["timestamp"])
    assert [s["name"] for s in held] == ["Running", "AwaitingRetry", "Retrying", "Completed"]
    at = {s["name"]: datetime.fromisoformat(s["timestamp"]) for s in held}
    assert (at["Retrying"] - at["AwaitingRetry"]).total_seconds() >= WAIT_S / 2  # not at once


def test_a_finished_task_stays_completed_whatever_its_artifacts(live, prefect_api):
    """A confusion matrix that cannot be drawn is left out, with a warning in the run's
    log; the task that made it, and the other artifacts, are recorded as they are."""
    result = live.run(odd_metrics, {}, enable_cache=False)
    assert result.succeeded, result.error
    [run] = flow_runs(prefect_api, result.run_name)
    tasks = task_runs(prefect_api, run["id"])
    assert {n: t["state_name"] for n, t in tasks.items()} == {
        "half-right": "Completed",
        "lopsided": "Completed",
    }
    by_run = {"flow_runs": {"id": {"any_": [run["id"]]}}}
    made = httpx.post(f"{prefect_api}/artifacts/filter", json=by_run, timeout=30).json()
    assert [a["key"] for a in made] == ["half-right-metrics"]
    body = {"logs": {"flow_run_id": {"any_": [run["id"]]}}}
    logged = httpx.post(f"{prefect_api}/logs/filter", json=body, timeout=30).json()
    assert any("no Prefect artifact for matrix" in line["message"] for line in logged)


def test_a_metrics_table_is_strict_json():
    """NaN and infinity are no JSON: a table keeps them by name. (A KFP component cannot
    log them, but metadata written otherwise, or by another release, may hold them.)"""
    scores = Metrics(name="scores", uri="/tmp/scores", metadata={"loss": float("inf")})
    [table] = prefect_rest.artifacts("evaluate", {"scores": scores})
    assert json.loads(table["data"], parse_constant=reject) == [{"metric": "loss", "value": "inf"}]


def test_an_artifact_that_cannot_be_built_is_left_out_not_raised():
    scores = Metrics(name="scores", uri="/tmp/scores", metadata={"accuracy": 0.5})
    matrix = ClassificationMetrics(name="matrix", uri="/tmp/matrix")
    matrix.metadata["confusionMatrix"] = {"annotationSpecs": [{}], "rows": []}
    made = prefect_rest.artifacts("evaluate", {"matrix": matrix, "scores": scores})
    assert [a["key"] for a in made] == ["evaluate-scores"]
