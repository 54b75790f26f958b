"""Small pipelines for Kubeflow's semantics that the local runner must keep (issue 28 §2)."""

from typing import Dict, List, NamedTuple, Optional  # noqa: UP035  (KFP reads typing names)

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from loopline.core.images import PLATFORM_IMAGE


@dsl.component
def echo(s: str) -> str:
    return s


@dsl.pipeline
def greet(msg: str = "hi") -> str:
    return echo(s=msg).output


@dsl.pipeline
def defaults_of_a_sub_pipeline() -> str:
    """The caller leaves the sub-pipeline's parameter out: its default applies."""
    return greet().output


@dsl.pipeline
def sub_pipeline_given_a_value() -> str:
    return greet(msg="yo").output


@dsl.component
def write_text(text: str, out: Output[Dataset]):
    with open(out.path, "w") as fh:
        fh.write(text)


@dsl.component
def read_all(data: Input[List[Dataset]]) -> str:  # noqa: UP006
    return ",".join(sorted(open(d.path).read() for d in data))


@dsl.pipeline
def write_each(texts: List[str] = ["a", "b"]) -> List[Dataset]:  # noqa: B006, UP006
    with dsl.ParallelFor(texts) as text:
        written = write_text(text=text)
    return dsl.Collected(written.outputs["out"])


@dsl.pipeline
def collected_artifacts_of_a_defaulted_sub_pipeline() -> str:
    """As the KFP SDK's pipeline_with_parallelfor_list_artifacts: the loop's list is the
    sub-pipeline's default."""
    return read_all(data=write_each().output).output


@dsl.component
def fail_with(message: str) -> str:
    raise ValueError(message)


@dsl.component
def consume(s: str = "the default") -> str:
    return s


@dsl.pipeline
def consumer_of_a_failed_task() -> str:
    failed = fail_with(message="boom")
    return consume(s=failed.output).ignore_upstream_failure().output


@dsl.component
def maybe(dataset: Optional[Input[Dataset]] = None) -> str:  # noqa: UP045
    return "no dataset" if dataset is None else open(dataset.path).read()


@dsl.pipeline
def optional_artifact(dataset: Optional[Input[Dataset]] = None) -> str:  # noqa: UP045
    return maybe(dataset=dataset).output


@dsl.component
def nested_ints() -> List[List[int]]:  # noqa: UP006
    return [[1, 2], [3]]


@dsl.component
def ints_by_name() -> Dict[str, List[int]]:  # noqa: UP006
    return {"a": [1, 2], "b": [3]}


@dsl.component
def kinds(xs: List[List[int]], by_name: Dict[str, List[int]]) -> str:  # noqa: UP006
    inner = [type(x).__name__ for row in xs for x in row]
    named = [type(x).__name__ for row in by_name.values() for x in row]
    return f"{xs} {dict(sorted(by_name.items()))} {' '.join(inner + named)}"


@dsl.pipeline
def nested_lists() -> str:
    return kinds(xs=nested_ints().output, by_name=ints_by_name().output).output


@dsl.component
def double(num: int) -> int:
    return 2 * num


@dsl.component
def add(nums: List[int]) -> int:  # noqa: UP006
    return sum(nums)


@dsl.pipeline
def conditional_producer_and_consumers(threshold: int = 2) -> List[int]:  # noqa: UP006
    """As the KFP SDK's test pipeline of that name: declares List[int], returns 10."""
    with dsl.ParallelFor([1, 2, 3]) as x:  # noqa: SIM117
        with dsl.If(x >= threshold):
            t = double(num=x)
    with dsl.If(threshold == 2):
        t = add(nums=dsl.Collected(t.output))
    return dsl.Collected(t.output)


@dsl.component
def not_a_list() -> List[int]:  # noqa: UP006
    return 10


@dsl.pipeline
def component_returns_the_wrong_type() -> str:
    return echo(s="after").after(not_a_list()).output


@dsl.component
def pair() -> NamedTuple("Pair", [("count", int), ("name", str)]):
    from collections import namedtuple

    return namedtuple("Pair", ["count", "name"])("three", "x")


@dsl.pipeline
def named_output_of_the_wrong_type() -> str:
    return echo(s=pair().outputs["name"]).output


@dsl.container_component
def container_list(out: dsl.OutputPath(List[int])):  # noqa: UP006
    return dsl.ContainerSpec(
        image=PLATFORM_IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf 10 > "$0"'],
        args=[out],
    )


@dsl.pipeline
def container_returns_the_wrong_type():
    container_list()


PLACEHOLDERS = {
    "job_name": dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    "job_resource_name": dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
    "job_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    "task_name": dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
    "task_id": dsl.PIPELINE_TASK_ID_PLACEHOLDER,
    "root": dsl.PIPELINE_ROOT_PLACEHOLDER,
    "created": dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
    "scheduled": dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
}


@dsl.component
def show(value: str) -> str:
    return value


@dsl.pipeline
def placeholders():
    """Each placeholder reaches a task: alone, inside an f-string, and in a loop."""
    for key, placeholder in PLACEHOLDERS.items():
        show(value=placeholder).set_display_name(key)
    show(value=f"run {dsl.PIPELINE_JOB_ID_PLACEHOLDER} of {dsl.PIPELINE_JOB_NAME_PLACEHOLDER}")
    with dsl.ParallelFor([1, 2]):
        show(value=dsl.PIPELINE_TASK_ID_PLACEHOLDER)


@dsl.container_component
def placeholders_in_a_command(out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image=PLATFORM_IMAGE,
        command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf "%s" "$1" > "$0"'],
        args=[
            out,
            dsl.ConcatPlaceholder(
                [
                    dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
                    "|",
                    dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                    "|",
                    dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
                ]
            ),
        ],
    )


@dsl.pipeline
def container_placeholders() -> str:
    return placeholders_in_a_command().output


@dsl.component
def need_data(dataset: Input[Dataset]) -> str:
    return open(dataset.path).read()


@dsl.pipeline
def optional_artifact_required(dataset: Optional[Input[Dataset]] = None) -> str:  # noqa: UP045
    """The pipeline's artifact is optional, the task's is not."""
    return need_data(dataset=dataset).output


@dsl.pipeline(pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
def workspace() -> str:
    return show(value=dsl.WORKSPACE_PATH_PLACEHOLDER).output


@dsl.component
def write_note(folder: str) -> str:
    from pathlib import Path

    (Path(folder) / "note.txt").write_text("written")
    return "ok"


@dsl.component
def read_note(folder: str, after: str) -> str:
    from pathlib import Path

    return (Path(folder) / "note.txt").read_text()


@dsl.pipeline(pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
def workspace_note() -> str:
    """A task that writes the workspace, and one (never cached) that reads it after."""
    wrote = write_note(folder=dsl.WORKSPACE_PATH_PLACEHOLDER)
    read = read_note(folder=dsl.WORKSPACE_PATH_PLACEHOLDER, after=wrote.output)
    read.set_caching_options(False)
    return read.output
