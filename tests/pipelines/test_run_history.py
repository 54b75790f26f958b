"""Recording runs in Prefect over REST when the server is busy, answers something that is
not its answer, or loses an answer on the way back: against the session's real server,
behind a relay that plays those faults (tests/pipelines/prefect_relay.py)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from kfp.dsl import Metrics

from loopline.pipelines.local import prefect_rest, run_history
from loopline.pipelines.local.prefect_rest import PrefectApi, PrefectApiError
from loopline.pipelines.local.results import RunResult, Status, TaskRecord
from tests.pipelines.prefect_relay import BUSY, DROP_AFTER, NOT_JSON, Relay, once
from tests.pipelines.test_first_run import flow_runs, task_runs


@pytest.fixture
def relay(prefect_api):
    relay = Relay(prefect_api)
    yield relay
    relay.close()


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s"
        time.sleep(0.05)


def one_task_run(name: str) -> RunResult:
    done = TaskRecord("train", Status.SUCCEEDED, cached=False, seconds=1.0)
    return RunResult(True, "review-history", name, None, records=[done])


def test_a_recording_given_up_on_posts_nothing_over_what_the_supervisor_recorded(
    tmp_path, prefect_api, relay
):
    """The end of a run stops waiting for a recording stuck on a busy server and defers
    the run; the supervisor records its final states. The request still trying again
    then gives up: none overwrites them once the server answers again."""
    name = f"late-{uuid.uuid4().hex[:8]}"
    result = one_task_run(name)
    recording = run_history.Recording(
        relay.url, key=run_history.new_key(), flow="review-history", name=name, parameters={}
    )
    recording.task_started("train")
    wait_for(lambda: "task_runs/" in relay.forwarded)
    relay.fault = lambda path: BUSY
    recording.task_retrying("train", 1, RuntimeError("transient"))  # AwaitingRetry: 503s
    wait_for(lambda: relay.received[-1].endswith("/set_state"))
    recording.task_finished(result.records[0])
    assert recording.finish(result, timeout=1) is False
    given_up = len(relay.received)

    home = tmp_path / "prefect"
    run_history.defer(home, result, {}, time.time(), key=recording.key)
    assert run_history.import_pending(home, prefect_api) == 1
    relay.fault = lambda path: None  # the server answers again
    recording._thread.join(30)  # its last request tried again (or gave up) by now
    assert relay.received[given_up:] == []
    [run] = flow_runs(prefect_api, name)
    assert run["state_type"] == "COMPLETED"
    assert task_runs(prefect_api, run["id"])["train"]["state_name"] == "Completed"


def test_an_answer_that_is_not_prefects_leaves_the_record_for_the_next_try(
    tmp_path, prefect_api, relay
):
    """A 2xx page that is not JSON (a proxy's, a cut answer) is no refusal: the record
    stays pending, not set aside, and the next import records it."""
    name = f"not-json-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "prefect"
    run_history.defer(home, one_task_run(name), {}, time.time())
    relay.fault = once(NOT_JSON, "flows/")
    with pytest.raises(PrefectApiError) as raised:
        run_history.import_pending(home, relay.url)
    assert raised.value.transient and "not JSON" in str(raised.value)
    assert len(run_history.pending(home)) == 1
    assert not (home / "pending" / "refused").exists()
    assert run_history.import_pending(home, relay.url) == 1
    [run] = flow_runs(prefect_api, name)
    assert run["state_type"] == "COMPLETED"


def test_a_log_or_artifact_post_whose_answer_is_lost_is_not_sent_twice(prefect_api, relay):
    """Prefect keeps logs and artifacts without a client-chosen id: one sent again after
    its answer was lost would be there twice. A state, set again, is the same state."""
    api = PrefectApi(relay.url)
    key = run_history.new_key()
    flow_run_id = prefect_rest.create_flow_run(
        api,
        key=key,
        flow="review-history",
        name=f"once-{key[:8]}",
        parameters={},
        tags=["loopline"],
        first=prefect_rest.state("RUNNING"),
    )
    task_id = prefect_rest.record_task_run(
        api, run_key=key, flow_run_id=flow_run_id, task="score", new=prefect_rest.state("RUNNING")
    )
    metrics = Metrics(name="metrics", uri=f"/tmp/{key}/metrics", metadata={"accuracy": 0.9})
    [table] = prefect_rest.artifacts("score", {"metrics": metrics})
    line = {
        "name": "loopline.run",
        "level": 20,
        "message": f"line {key}",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "flow_run_id": flow_run_id,
        "task_run_id": task_id,
    }
    relay.fault = once(DROP_AFTER, "artifacts/", "logs/", f"task_runs/{task_id}/set_state")
    try:
        with pytest.raises(ConnectionError):
            prefect_rest.create_artifact(api, table, flow_run_id, task_id)
        with pytest.raises(ConnectionError):
            prefect_rest.send_logs(api, [line])
        prefect_rest.set_task_run_state(api, task_id, prefect_rest.state("COMPLETED"))
    finally:
        api.close()

    by_run = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
    made = httpx.post(f"{prefect_api}/artifacts/filter", json=by_run, timeout=30).json()
    assert [a["key"] for a in made] == ["score-metrics"]
    logged = httpx.post(
        f"{prefect_api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}},
        timeout=30,
    ).json()
    assert [entry["message"] for entry in logged] == [f"line {key}"]
    assert relay.forwarded.count(f"task_runs/{task_id}/set_state") == 2  # sent again
    [run] = flow_runs(prefect_api, f"once-{key[:8]}")
    assert task_runs(prefect_api, run["id"])["score"]["state_type"] == "COMPLETED"


def test_a_closed_client_sends_nothing_more():
    api = PrefectApi("http://127.0.0.1:9/api")  # nothing is ever sent: no server needed
    api.close()
    with pytest.raises(ConnectionAbortedError, match="closed"):
        api.post("flows/", {"name": "x"})
