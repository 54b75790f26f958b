"""One small pipeline per executor feature, for parity with kfp.local and engine tests."""

from typing import List  # noqa: UP035  (KFP reads typing.List annotations)

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from tests.pipelines.artifact_types import BQTable
from tests.pipelines.semantics_pipelines import defaults_of_a_sub_pipeline


@dsl.component
def add(a: int, b: int) -> int:
    return a + b


@dsl.component
def write_text(text: str, out: Output[Dataset]):
    with open(out.path, "w") as fh:
        fh.write(text)


@dsl.component
def read_text(data: Input[Dataset]) -> str:
    with open(data.path) as fh:
        return fh.read()


@dsl.component
def total(xs: List[int]) -> int:  # noqa: UP006
    return int(sum(xs))


@dsl.component
def env_value(name: str) -> str:
    import os

    return os.environ.get(name, "<unset>")


@dsl.component
def describe(data: Input[Dataset]) -> str:
    return f"{data.uri}|{data.metadata.get('origin', '')}"


@dsl.component
def shout(message: str) -> str:
    print(message.upper())
    return message.upper()


@dsl.pipeline
def chain(x: int = 1, text: str = "hello") -> str:
    first = add(a=x, b=2)
    second = add(a=first.output, b=3)
    written = write_text(text=text).after(second)
    return read_text(data=written.outputs["out"]).output


@dsl.pipeline
def branches(x: int = 5) -> int:
    base = add(a=x, b=0)
    with dsl.If(base.output > 10):
        add(a=base.output, b=100)
    with dsl.Elif(base.output > 3):
        add(a=base.output, b=200)
    with dsl.Else():
        add(a=base.output, b=300)
    return base.output


@dsl.pipeline
def fan_out(offset: int = 10) -> int:
    with dsl.ParallelFor([1, 2, 3, 4], parallelism=2) as item:
        each = add(a=item, b=offset)
    return total(xs=dsl.Collected(each.output)).output


@dsl.pipeline
def exit_handling(message: str = "done"):
    final = shout(message=message)
    with dsl.ExitHandler(final):
        add(a=1, b=2)


@dsl.pipeline
def inner(x: int) -> int:
    return add(a=x, b=1).output


@dsl.pipeline
def nested(x: int = 4) -> int:
    once = inner(x=x)
    return inner(x=once.output).output


@dsl.pipeline
def importing(uri: str = "file:///tmp/loopline-import-test") -> str:
    imported = dsl.importer(
        artifact_uri=uri, artifact_class=Dataset, reimport=False, metadata={"origin": "test"}
    )
    return describe(data=imported.output).output


@dsl.pipeline
def retrying(x: int = 2) -> int:
    return add(a=x, b=40).set_retry(num_retries=2, backoff_duration="0s").output


@dsl.pipeline
def env_vars() -> str:
    return (
        env_value(name="LOOPLINE_TEST_VALUE").set_env_variable("LOOPLINE_TEST_VALUE", "42").output
    )


@dsl.pipeline
def uncached(x: int = 1) -> int:
    return add(a=x, b=1).set_caching_options(False).output


@dsl.component
def pairs() -> list:
    return [{"a": 1, "b": {"c": 10}}, {"a": 2, "b": {"c": 20}}, {"a": 3, "b": {"c": 30}}]


@dsl.pipeline
def item_fields(offset: int = 100) -> int:
    """`item.a` on a list of dicts: a static list, and a task's list output (nested field)."""
    with dsl.ParallelFor([{"a": 1, "b": 2}, {"a": 3, "b": 4}]) as item:
        static = add(a=item.a, b=item.b)
    made = pairs()
    with dsl.ParallelFor(made.output) as each:
        dynamic = add(a=each.a, b=offset)
    first = total(xs=dsl.Collected(static.output))
    return add(a=first.output, b=total(xs=dsl.Collected(dynamic.output)).output).output


@dsl.component
def join(a: str, b: str) -> str:
    return f"{a}:{b}"


@dsl.pipeline
def fan_in_branch_one_of(offset: int = 10, threshold: int = 50) -> str:
    """ParallelFor fan-in feeds an If/Else; each branch writes an artifact (and a label);
    a later task takes the one that ran through dsl.OneOf."""
    with dsl.ParallelFor([1, 2, 3, 4]) as item:
        each = add(a=item, b=offset)
    summed = total(xs=dsl.Collected(each.output))
    with dsl.If(summed.output > threshold):
        big = write_text(text="big")
        big_name = shout(message="big")
    with dsl.Else():
        small = write_text(text="small")
        small_name = shout(message="small")
    chosen = read_text(data=dsl.OneOf(big.outputs["out"], small.outputs["out"]))
    return join(a=chosen.output, b=dsl.OneOf(big_name.output, small_name.output)).output


@dsl.component
def read_all(data: Input[List[Dataset]]) -> str:  # noqa: UP006
    return ",".join(sorted(open(d.path).read() for d in data))


@dsl.component
def words(texts: List[str]) -> str:  # noqa: UP006
    return ",".join(sorted(texts))


@dsl.pipeline
def write_each(texts: List[str]) -> List[Dataset]:  # noqa: UP006
    with dsl.ParallelFor(texts) as text:
        written = write_text(text=text)
    return dsl.Collected(written.outputs["out"])


@dsl.pipeline
def over_artifacts() -> str:
    """ParallelFor over a list of artifacts, and the whole list as one input."""
    made = write_each(texts=["a", "b", "c"])
    with dsl.ParallelFor(made.output) as artifact:
        each = read_text(data=artifact)
    whole = read_all(data=made.output)
    return join(a=words(texts=dsl.Collected(each.output)).output, b=whole.output).output


@dsl.component
def count_all(data: Input[List[Dataset]]) -> int:  # noqa: UP006
    return len(data)


@dsl.component
def twice(x: int) -> list:
    return [x, x]


@dsl.component
def count(xs: list) -> int:
    return len(xs)


@dsl.component
def four(a: int, b: int, c: int, d: int) -> str:
    return f"{a} {b} {c} {d}"


@dsl.pipeline
def nested_fan_in() -> str:
    """Fan-in at every level of two nested loops, of parameters and of artifacts."""
    with dsl.ParallelFor([1, 2]) as outer:
        with dsl.ParallelFor([10, 20, 30]) as inner:
            each = add(a=outer, b=inner)
            written = write_text(text="x")
        per_outer = total(xs=dsl.Collected(each.output))  # 63 and 66
        doubled = twice(x=outer)
    return four(
        a=total(xs=dsl.Collected(each.output)).output,  # 129: both levels, one flat list
        b=count_all(data=dsl.Collected(written.outputs["out"])).output,  # 6 artifacts
        c=total(xs=dsl.Collected(per_outer.output)).output,  # 129 again, level by level
        d=count(xs=dsl.Collected(doubled.output)).output,  # 2: a list output stays a list
    ).output


@dsl.component
def make_report(rows: int, out: Output[Dataset]):
    with open(out.path, "w") as fh:
        fh.write("x" * rows)
    out.metadata["rows"] = rows
    out.metadata["kind"] = "report"


@dsl.component
def read_report(report: Input[Dataset]) -> str:
    with open(report.path) as fh:
        size = len(fh.read())
    return f"{report.schema_title} {report.metadata['kind']} {report.metadata['rows']} {size}"


@dsl.pipeline
def artifact_metadata(rows: int = 3) -> str:
    """An artifact's metadata travels with it to the next task."""
    return read_report(report=make_report(rows=rows).outputs["out"]).output


@dsl.component
def label(name: str, x: int) -> str:
    return f"{name}{x}"


@dsl.pipeline
def branches_in_loop(threshold: int = 5) -> str:
    """dsl.If/Elif/Else inside a loop: each item takes one branch; dsl.OneOf picks the
    label of the branch that ran, and the labels fan in."""
    with dsl.ParallelFor([1, 5, 9]) as item:
        value = add(a=item, b=0)
        with dsl.If(value.output < threshold):
            low = label(name="low", x=item)
        with dsl.Elif(value.output == threshold):
            middle = label(name="mid", x=item)
        with dsl.Else():
            high = label(name="high", x=item)
        picked = shout(message=dsl.OneOf(low.output, middle.output, high.output))
    return words(texts=dsl.Collected(picked.output)).output


@dsl.pipeline
def several_exit_handlers(message: str = "bye") -> str:
    """Two exit handlers, each guarding its own group."""
    first_cleanup = shout(message="first")
    with dsl.ExitHandler(first_cleanup):
        add(a=1, b=2)
    second_cleanup = shout(message="second")
    with dsl.ExitHandler(second_cleanup):
        add(a=3, b=4)
    return join(a=message, b="done").output


@dsl.component
def make_table(rows: int, table: Output[BQTable]):
    table.metadata.update(projectId="p", datasetId="d", tableId="t")
    with open(table.path, "w") as fh:
        fh.write("r" * rows)


@dsl.component
def read_table(table: Input[BQTable]) -> str:
    with open(table.path) as fh:
        size = len(fh.read())
    return f"{type(table).__name__} {table.schema_title} {table.table_id} {size}"


@dsl.pipeline
def custom_types(rows: int = 4) -> str:
    """A custom artifact type (a third-party class) reaches the next task as that class."""
    return read_table(table=make_table(rows=rows).outputs["table"]).output


FEATURES = {
    "chain": (chain, {"x": 3, "text": "parity"}),
    "branches": (branches, {"x": 5}),
    "fan_out": (fan_out, {"offset": 10}),
    "exit_handling": (exit_handling, {"message": "bye"}),
    "nested": (nested, {"x": 4}),
    "importing": (importing, {}),
    "retrying": (retrying, {"x": 2}),
    "env_vars": (env_vars, {}),
    "uncached": (uncached, {"x": 7}),
    "item_fields": (item_fields, {"offset": 100}),
    "over_artifacts": (over_artifacts, {}),
    "artifact_metadata": (artifact_metadata, {"rows": 3}),
    "branches_in_loop": (branches_in_loop, {"threshold": 5}),
    "several_exit_handlers": (several_exit_handlers, {"message": "bye"}),
    "sub_pipeline_defaults": (defaults_of_a_sub_pipeline, {}),
}
