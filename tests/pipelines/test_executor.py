"""The Prefect engine's own behaviour on a real Prefect server (the session's)."""

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from loopline.pipelines.ir import UnsupportedPipeline
from loopline.pipelines.local.scope import InputError
from tests.pipelines import engine_pipelines as p
from tests.pipelines.feature_pipelines import chain, uncached

pytestmark = pytest.mark.slow


def cached(result) -> dict[str, bool]:
    return {r.name: r.cached for r in result.records if r.status == "succeeded"}


def statuses(result) -> dict[str, str]:
    return {r.name: r.status for r in result.records}


def test_independent_tasks_run_concurrently(engine):
    result = engine.run(p.concurrent, {"seconds": 1.0}, enable_cache=False)
    assert result.succeeded, result.error
    (a_start, a_end), (b_start, b_end) = (
        map(float, result.task_outputs[name]["Output"].split(",")) for name in ("stamp", "stamp-2")
    )
    assert a_start < b_end and b_start < a_end  # the two sleeps overlapped


def test_unchanged_rerun_is_served_from_cache_and_a_changed_input_reruns_downstream(engine):
    first = engine.run(chain, {"x": 11, "text": "one"})
    assert first.succeeded and not any(cached(first).values())
    again = engine.run(chain, {"x": 11, "text": "one"})
    assert all(cached(again).values()) and again.outputs == first.outputs
    changed = engine.run(chain, {"x": 11, "text": "two"})
    assert cached(changed) == {"add": True, "add-2": True, "write-text": False, "read-text": False}
    assert changed.outputs == {"Output": "two"}


def test_caching_can_be_turned_off_per_task_and_per_run(engine):
    engine.run(uncached, {"x": 21})
    assert cached(engine.run(uncached, {"x": 21})) == {"add": False}
    engine.run(chain, {"x": 31, "text": "t"})
    assert not any(cached(engine.run(chain, {"x": 31, "text": "t"}, enable_cache=False)).values())


def test_set_retry_retries_a_transient_failure(engine, tmp_path):
    marker = tmp_path / "attempts"
    result = engine.run(p.with_retry, {"marker": str(marker)}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": 2} and marker.read_text() == "2"


def test_failed_task_fails_the_run_with_its_traceback_and_resumes_from_cache(engine, tmp_path):
    marker = tmp_path / "broken"
    marker.touch()
    failed = engine.run(p.failing, {"marker": str(marker)})
    assert not failed.succeeded and failed.failed_task == "fail-if-present"
    assert "refusing to run while" in failed.error
    assert statuses(failed) == {"add": "succeeded", "fail-if-present": "failed", "add-2": "skipped"}
    # The failed task's traceback is in its own log, beside its outputs.
    [record] = [r for r in failed.records if r.status == "failed"]
    assert "ValueError: refusing to run while" in (record.folder / "task.log").read_text()
    APILogHandler().flush()  # logs reach the server in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[failed.flow_run_id]))
        )
    text = "\n".join(log.message for log in logs)
    assert "Traceback" in text and "ValueError: refusing to run while" in text
    marker.unlink()  # the fix
    fixed = engine.run(p.failing, {"marker": str(marker)})
    assert fixed.succeeded and fixed.outputs == {"Output": 35}
    assert cached(fixed) == {"add": True, "fail-if-present": False, "add-2": False}


def test_exit_handler_runs_when_the_guarded_task_fails(engine, tmp_path):
    marker, cleaned = tmp_path / "broken", tmp_path / "cleaned"
    marker.touch()
    result = engine.run(p.cleanup_after_failure, {"marker": str(marker), "cleaned": str(cleaned)})
    assert not result.succeeded and result.failed_task == "exit-handler-1.fail-if-present"
    assert cleaned.exists()


def test_a_component_calling_sys_exit_fails_its_task_and_the_exit_handler_runs(engine, tmp_path):
    """The issue's case: Prefect saw a SystemExit and aborted the whole flow run."""
    cleaned = tmp_path / "cleaned"
    result = engine.run(
        p.cleanup_after_exit, {"code": 1, "cleaned": str(cleaned)}, enable_cache=False
    )
    assert not result.succeeded and result.failed_task == "exit-handler-1.exit-with"
    assert "exited with code 1" in result.error
    assert cleaned.exists()
    assert engine.run(chain, {"x": 1, "text": "after"}, enable_cache=False).succeeded


def test_platform_image_container_component_runs_its_command(engine):
    result = engine.run(p.platform_container, {"text": "hello"}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": "hello"}


@pytest.mark.parametrize("how", ["exit", "segfault", "oom-kill"])
def test_a_crashed_worker_fails_its_task_only_and_the_exit_handler_runs(engine, tmp_path, how):
    cleaned = tmp_path / "cleaned"
    crashed = engine.run(p.crashing, {"how": how, "cleaned": str(cleaned)}, enable_cache=False)
    assert not crashed.succeeded and "worker process running this component died" in crashed.error
    assert crashed.failed_task == "exit-handler-1.crash"
    assert cleaned.exists(), "the exit handler did not run after the crash"
    assert engine.run(chain, {"x": 1, "text": "after"}, enable_cache=False).succeeded


def test_metrics_become_prefect_artifacts(engine):
    result = engine.run(p.scoring, {}, enable_cache=False)
    assert result.succeeded
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(limit=50)
    keys = {a.key: a for a in artifact}
    assert "score-metrics" in keys and "accuracy" in str(keys["score-metrics"].data)


def test_bad_submissions_fail_before_anything_runs(engine):
    with pytest.raises(
        UnsupportedPipeline, match=r"alpine:3.20 \(task alpine-echo\) needs a cluster"
    ):
        engine.run(p.foreign_image, {})
    with pytest.raises(InputError, match="has no parameter"):
        engine.run(chain, {"y": 1})
    with pytest.raises(InputError, match="parameter x must be number_integer"):
        engine.run(chain, {"x": "three"})


def test_kubernetes_settings_are_honoured_locally_or_refused_up_front(engine, monkeypatch):
    """A Secret's variables come from this environment; scheduling hints are a cluster's
    matter; a volume cannot be mounted here, so the run is refused before anything runs."""
    monkeypatch.delenv("LOOPLINE_TEST_FROM_SECRET", raising=False)
    with pytest.raises(UnsupportedPipeline, match="export LOOPLINE_TEST_FROM_SECRET"):
        engine.run(p.from_a_secret, {}, enable_cache=False)
    monkeypatch.setenv("LOOPLINE_TEST_FROM_SECRET", "value-from-the-environment")
    result = engine.run(p.from_a_secret, {}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": "value-from-the-environment"}
    with pytest.raises(UnsupportedPipeline, match="kfp-kubernetes pvcMount .* needs a cluster"):
        engine.run(p.with_a_volume, {})


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(10, "big:BIG"), (0, "small:SMALL")],  # 1+2+3+4 + 4*offset against threshold 50
)
def test_fan_in_feeds_a_branch_whose_artifact_a_later_task_takes_through_one_of(
    engine, offset, expected
):
    """kfp.local cannot run dsl.OneOf over artifacts, so the expected outputs are written
    here: the sum is 50 or 10 against a threshold of 20; only the branch that ran gives
    the artifact and the label."""
    from tests.pipelines.feature_pipelines import fan_in_branch_one_of

    result = engine.run(
        fan_in_branch_one_of, {"offset": offset, "threshold": 20}, enable_cache=False
    )
    assert result.succeeded, result.error
    assert result.outputs == {"Output": expected}
    ran = {r.name for r in result.records if r.status == "succeeded"}
    skipped = {r.name for r in result.records if r.status == "skipped"}
    branch, other = (
        ("condition-4", "condition-5")
        if expected.startswith("big")
        else ("condition-5", "condition-4")
    )
    assert any(name.startswith(f"condition-branches-3.{branch}.") for name in ran), ran
    assert not any(name.startswith(f"condition-branches-3.{other}.") for name in ran), ran
    assert skipped, "the other branch is recorded as skipped"


def test_kfp_local_is_refused_one_of_over_artifacts_up_front(tmp_path):
    from loopline.core.settings import load_settings
    from loopline.pipelines.local.kfp_local import run_local
    from tests.pipelines.feature_pipelines import fan_in_branch_one_of

    with pytest.raises(UnsupportedPipeline, match="--engine prefect"):
        run_local(fan_in_branch_one_of, {}, load_settings({"LOOPLINE_HOME": str(tmp_path)}))
    assert not (tmp_path / "artifacts").exists()


def test_parallel_for_over_artifacts_reads_each_and_the_list_whole(engine):
    """Also compared with kfp.local in test_parity; here the expected output is explicit."""
    from tests.pipelines.feature_pipelines import over_artifacts

    result = engine.run(over_artifacts, {}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": "a,b,c:a,b,c"}
    reads = [r.name for r in result.records if r.name.endswith("read-text")]
    assert len(reads) == 3, reads


def test_nested_loops_fan_in_at_every_level(engine):
    """kfp.local fails on fan-in across two loops; Kubeflow collects one flat list."""
    from tests.pipelines.feature_pipelines import nested_fan_in

    result = engine.run(nested_fan_in, {}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": "129 6 129 2"}


def test_concat_and_if_present_placeholders_resolve_as_on_kubeflow(engine):
    """kfp.local runs no container components: the expected output is written here."""
    result = engine.run(p.placeholders, {"text": "hi"}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": "<<hinone>s>|--no-flag"}


def test_final_status_sees_the_failure_and_ignore_upstream_failure_runs_after_it(engine, tmp_path):
    """As on Kubeflow: the exit handler's task gets the guarded group's final status, and
    a task marked ignore_upstream_failure runs although its upstream failed."""
    import json

    marker, report, cleaned = tmp_path / "broken", tmp_path / "report.json", tmp_path / "cleaned"
    marker.touch()
    result = engine.run(
        p.final_status_and_ignored_failure,
        {"marker": str(marker), "report": str(report), "cleaned": str(cleaned)},
        enable_cache=False,
    )
    assert not result.succeeded
    assert cleaned.exists(), "the ignore_upstream_failure task did not run"
    status = json.loads(report.read_text())
    assert status["state"] == "FAILED" and status["task"], status
    marker.unlink()
    fine = engine.run(
        p.final_status_and_ignored_failure,
        {"marker": str(marker), "report": str(report), "cleaned": str(cleaned)},
        enable_cache=False,
    )
    assert fine.succeeded, fine.error
    assert json.loads(report.read_text())["state"] == "SUCCEEDED"


def test_if_elif_else_inside_a_loop_takes_one_branch_per_item(engine):
    """Also compared with kfp.local in test_parity; here each item's branch is checked."""
    from tests.pipelines.feature_pipelines import branches_in_loop

    result = engine.run(branches_in_loop, {"threshold": 5}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.outputs == {"Output": "HIGH9,LOW1,MID5"}
    ran = {r.name for r in result.records if r.status == "succeeded" and ".condition-" in r.name}
    prefix = "for-loop-2[{}].condition-branches-3."
    assert ran == {
        prefix.format(0) + "condition-4.label",  # 1 < 5: If
        prefix.format(1) + "condition-5.label-2",  # 5 == 5: Elif
        prefix.format(2) + "condition-6.label-3",  # 9: Else
    }


def test_several_exit_handlers_each_run_once(engine):
    from tests.pipelines.feature_pipelines import several_exit_handlers

    result = engine.run(several_exit_handlers, {"message": "bye"}, enable_cache=False)
    assert result.succeeded, result.error
    assert result.task_outputs["shout"] == {"Output": "FIRST"}
    assert result.task_outputs["shout-2"] == {"Output": "SECOND"}
    assert sorted(r.name for r in result.records) == [
        "exit-handler-1.add",
        "exit-handler-2.add-2",
        "join",
        "shout",
        "shout-2",
    ]


def test_a_custom_artifact_type_reaches_the_next_task_as_its_class(engine):
    """kfp.local hands the next task a plain Artifact (its helpers are gone, so the task
    fails there): the expected output is written here. A cache hit keeps the type too."""
    from tests.pipelines.feature_pipelines import custom_types

    expected = {"Output": "BQTable google.BQTable p.d.t 4"}
    first = engine.run(custom_types, {"rows": 4})
    assert first.succeeded, first.error
    assert first.outputs == expected
    again = engine.run(custom_types, {"rows": 4})
    assert again.succeeded and all(r.cached for r in again.records), again.records
    assert again.outputs == expected


def test_concurrent_runs_share_the_cache_and_never_each_others_folders(engine):
    """Three runs at once, one cache: the issue saw a cache file vanish under a nested-loop
    pipeline in 1 run of 4. Every run must succeed with the right output, in its own folder."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.pipelines.feature_pipelines import nested_fan_in

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: engine.run(nested_fan_in, {}), range(3)))
    assert all(r.succeeded for r in results), [r.error for r in results]
    assert all(r.outputs == {"Output": "129 6 129 2"} for r in results)
    assert len({r.run_dir for r in results}) == 3
