"""Kubeflow's semantics in the local runner (issue 28 §2), without a Prefect server: the
run's DAG in this process, each component on the calling thread (a new process where a
test reads the task's log)."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loopline.core.layout import ERROR
from loopline.pipelines.ir import load
from loopline.pipelines.local import component_runtime
from loopline.pipelines.local.dag_orchestrator import PipelineFailed, PipelineRun
from loopline.pipelines.local.results import TASK_LOG
from tests.pipelines import semantics_pipelines as p


class Ran:
    def __init__(self, run: PipelineRun, outputs: dict | None, error: PipelineFailed | None):
        self.run, self.outputs, self.error = run, outputs, error
        self.statuses = {r.name: str(r.status) for r in run.records}

    def output(self, task: str) -> dict:
        return self.run.leaf_outputs[task].parameters


def run(pipeline, arguments: dict | None = None, *, tmp_path: Path, runtime=None) -> Ran:
    ran = PipelineRun(
        load(pipeline),
        artifact_root=tmp_path / "artifacts",
        cache=None,
        runtime=runtime or component_runtime.InProcess(),
    )
    try:
        return Ran(ran, ran.execute(arguments or {}), None)
    except PipelineFailed as exc:
        return Ran(ran, None, exc)


def test_a_sub_pipelines_parameter_defaults_apply_when_the_caller_leaves_them_out(tmp_path):
    ran = run(p.defaults_of_a_sub_pipeline, tmp_path=tmp_path)
    assert ran.error is None and ran.outputs == {"Output": "hi"}  # kfp.local: 'hi' (test_parity)
    given = run(p.sub_pipeline_given_a_value, tmp_path=tmp_path)
    assert given.outputs == {"Output": "yo"}
    loop = run(p.collected_artifacts_of_a_defaulted_sub_pipeline, tmp_path=tmp_path)
    assert loop.error is None and loop.outputs == {"Output": "a,b"}


def test_an_ignore_upstream_failure_consumer_runs_with_its_inputs_default(tmp_path):
    ran = run(p.consumer_of_a_failed_task, tmp_path=tmp_path)
    assert ran.error is not None and ran.error.task == "fail-with"  # the run still fails
    assert ran.statuses == {"fail-with": "failed", "consume": "succeeded"}
    assert ran.output("consume") == {"Output": "the default"}


def test_an_optional_pipeline_artifact_left_out_has_no_value(tmp_path):
    ran = run(p.optional_artifact, tmp_path=tmp_path)
    assert ran.error is None, ran.error
    assert ran.outputs == {"Output": "no dataset"} and ran.statuses == {"maybe": "succeeded"}


def test_whole_numbers_in_nested_lists_and_dicts_arrive_as_ints(tmp_path):
    ran = run(p.nested_lists, tmp_path=tmp_path)
    assert ran.error is None, ran.error
    assert ran.outputs == {
        "Output": "[[1, 2], [3]] {'a': [1, 2], 'b': [3]} " + " ".join(["int"] * 6)
    }


def test_a_pipeline_output_of_the_wrong_type_fails_naming_output_type_and_value(tmp_path):
    ran = run(p.conditional_producer_and_consumers, tmp_path=tmp_path)
    assert ran.outputs is None
    message = str(ran.error)
    assert ran.error.task == "conditional-producer-and-consumers"
    for part in ("output Output", "declared LIST", "returned 10", "condition-4.add"):
        assert part in message, message


@pytest.mark.parametrize(
    "pipeline, task, parts",
    [
        (p.component_returns_the_wrong_type, "not-a-list", ("Output", "List[int]", "10")),
        (p.named_output_of_the_wrong_type, "pair", ("output count", "declared int", "'three'")),
        (p.container_returns_the_wrong_type, "container-list", ("output out", "LIST", "10")),
    ],
)
def test_a_task_returning_the_wrong_type_fails(pipeline, task, parts, tmp_path):
    ran = run(pipeline, tmp_path=tmp_path)
    assert ran.error is not None and ran.error.task == task
    assert ran.statuses[task] == "failed"
    for part in parts:
        assert part in str(ran.error), ran.error


def test_every_placeholder_kubeflow_fills_has_its_local_value(tmp_path):
    before = datetime.now(UTC).replace(microsecond=0)
    ran = run(p.placeholders, tmp_path=tmp_path)
    assert ran.error is None, ran.error
    values = {
        key: ran.output("show" if i == 0 else f"show-{i + 1}")["Output"]
        for i, key in enumerate(p.PLACEHOLDERS)
    }
    place = ran.run.place
    assert values["job_name"] == values["job_resource_name"] == place.run_name
    assert values["job_id"] == place.run_id
    assert values["task_name"] == "show-4"  # the task's own name in its DAG
    assert re.fullmatch(r"[0-9a-f]{32}", values["task_id"])
    assert values["root"] == str(tmp_path / "artifacts")
    created = datetime.strptime(values["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= created <= datetime.now(UTC) + timedelta(seconds=1)
    assert values["scheduled"] == values["created"]  # not started by a schedule
    assert ran.output("show-9")["Output"] == f"run {place.run_id} of {place.run_name}"
    in_loop = [v.parameters["Output"] for k, v in ran.run.leaf_outputs.items() if "[" in k]
    task_ids = {values["task_id"], *in_loop}
    assert len(in_loop) == 2 and len(task_ids) == 3  # one id per execution


def test_the_workspace_placeholder_names_a_folder_the_runs_tasks_share(tmp_path):
    ran = run(p.workspace, tmp_path=tmp_path)
    assert ran.error is None, ran.error
    assert ran.outputs == {"Output": str(ran.run.place.workspace)}
    assert ran.run.place.workspace.is_dir()


def test_placeholders_in_a_container_command(tmp_path):
    ran = run(p.container_placeholders, tmp_path=tmp_path)
    assert ran.error is None, ran.error
    name, task, created = ran.outputs["Output"].split("|")
    assert name == ran.run.place.run_name and task == "placeholders-in-a-command"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)


def test_a_failure_names_the_task_the_input_why_and_the_fix_and_has_a_task_log(tmp_path):
    ran = run(p.optional_artifact_required, tmp_path=tmp_path)
    message = str(ran.error)
    for part in ("task need-data", "input dataset", "no value", "declare this task"):
        assert part in message, message
    assert ran.statuses == {"need-data": "failed"}
    log = ran.run.place.task_dir("need-data") / TASK_LOG
    assert str(log) in message and "input dataset" in log.read_text()
    error = (log.parent / ERROR).read_text()  # what the run's summary shows
    assert error.startswith("UnresolvedInput: input dataset has no value")


def test_a_components_own_failure_points_to_its_task_log(tmp_path):
    runtime = component_runtime.NewProcess()
    ran = run(p.consumer_of_a_failed_task, tmp_path=tmp_path, runtime=runtime)
    log = ran.run.place.task_dir("fail-with") / TASK_LOG
    assert "ValueError: boom" in log.read_text() and str(log) in str(ran.error)


def test_the_mount_path_is_filled_only_where_it_names_the_workspace():
    from loopline.pipelines.local.placeholders import MOUNT_PATH, fill

    values = {MOUNT_PATH: "/runs/r1/workspace"}
    given = [MOUNT_PATH, f"{MOUNT_PATH}/data", f"{MOUNT_PATH}-old/x", f"{MOUNT_PATH}.bak"]
    assert fill(given, values) == [
        "/runs/r1/workspace",
        "/runs/r1/workspace/data",
        f"{MOUNT_PATH}-old/x",  # another folder that only starts the same
        f"{MOUNT_PATH}.bak",
    ]


def test_a_task_that_uses_the_workspace_is_never_served_from_the_cache(tmp_path):
    """Each run has a new workspace: a writer served from the cache would leave it empty
    for the reader after it."""
    from loopline.pipelines.local.cache import TaskCache

    cache = TaskCache(tmp_path / "cache")
    for _ in range(2):
        ran = PipelineRun(
            load(p.workspace_note),
            artifact_root=tmp_path / "artifacts",
            cache=cache,
            runtime=component_runtime.InProcess(),
        )
        assert ran.execute({}) == {"Output": "written"}
        assert not any(r.cached for r in ran.records)
