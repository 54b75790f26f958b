"""The task cache's key: what makes a task run again, without a Prefect server (the run's
DAG in this process, each component on the calling thread)."""

import os

import pandas as pd
from kfp import dsl

from loopline.components.ingest import ingest
from loopline.pipelines.ir import load
from loopline.pipelines.local import component_runtime
from loopline.pipelines.local.cache import TaskCache, local_path
from loopline.pipelines.local.dag_orchestrator import PipelineRun


@dsl.pipeline
def ingest_only(dataset: str) -> dsl.Dataset:
    return ingest(source=dataset, label_column="label").outputs["dataset"]


def run(pipeline, arguments: dict, home):
    """One run sharing ``home``'s cache; returns {task: cached} and the leaf outputs."""
    ran = PipelineRun(
        load(pipeline),
        artifact_root=home / "artifacts",
        cache=TaskCache(home / "cache"),
        runtime=component_runtime.InProcess(),
    )
    ran.execute(arguments)
    return {r.name: r.cached for r in ran.records}, ran.leaf_outputs


def write_csv(path, rows: int) -> None:
    frame = pd.DataFrame({"mean radius": range(rows), "label": [i % 2 for i in range(rows)]})
    frame.to_csv(path, index=False)


def test_a_csv_edited_in_place_between_runs_is_ingested_afresh(tmp_path):
    csv = tmp_path / "cancer.csv"
    write_csv(csv, 60)
    first, outputs = run(ingest_only, {"dataset": str(csv)}, tmp_path)
    assert first == {"ingest": False}
    assert sum(outputs["ingest"].artifacts["dataset"].metadata["rows"].values()) == 60

    again, _ = run(ingest_only, {"dataset": str(csv)}, tmp_path)
    assert again == {"ingest": True}  # unchanged: served from the cache

    write_csv(csv, 40)  # the same path, fewer rows
    edited, outputs = run(ingest_only, {"dataset": str(csv)}, tmp_path)
    assert edited == {"ingest": False}
    assert sum(outputs["ingest"].artifacts["dataset"].metadata["rows"].values()) == 40

    os.utime(csv)  # a new mtime, the same bytes: the content hash still matches
    touched, _ = run(ingest_only, {"dataset": str(csv)}, tmp_path)
    assert touched == {"ingest": True}


def test_a_folder_input_is_keyed_on_the_files_inside_it(tmp_path):
    cache = TaskCache(tmp_path / "cache")
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.png").write_bytes(b"one")
    before = cache.path_hash(folder)
    assert cache.path_hash(folder) == before
    (folder / "cat" / "2.png").write_bytes(b"two")
    assert cache.path_hash(folder) != before


def test_only_existing_local_paths_are_keyed_on_content(tmp_path):
    (tmp_path / "data.csv").write_text("x\n")
    assert local_path(str(tmp_path / "data.csv")) == (tmp_path / "data.csv").resolve()
    for value in ("digits", "s3://bucket/data.csv", str(tmp_path / "gone.csv"), "/", 3, ""):
        assert local_path(value) is None, value


def test_schedule_no_cache_reaches_the_scheduled_runs(home, monkeypatch):
    import contextlib

    from typer.testing import CliRunner

    from loopline.cli import app
    from loopline.pipelines.cluster import schedules
    from loopline.pipelines.local import prefect_server

    seen = []
    monkeypatch.setattr(
        schedules, "schedule_prefect", lambda ir, settings, **kw: seen.append(kw) or "dep-1"
    )
    monkeypatch.setattr(
        prefect_server, "api", lambda settings: contextlib.nullcontext("http://api")
    )
    for flags in ([], ["--no-cache"]):
        result = CliRunner().invoke(app, ["schedule", "training", "--every", "2m", *flags])
        assert result.exit_code == 0, result.output
    assert [kw["enable_cache"] for kw in seen] == [True, False]


@dsl.component
def hello(message: str) -> str:
    print(message)
    return message


@dsl.pipeline
def repeated(message: str = "again") -> None:
    with dsl.ParallelFor([1, 2, 3], parallelism=1):  # one after another, identical
        hello(message=message)


def test_identical_tasks_of_one_run_all_run_and_a_later_run_is_served(tmp_path):
    first, _ = run(repeated, {}, tmp_path)
    assert len(first) == 3 and not any(first.values())  # no iteration served by another
    second, _ = run(repeated, {}, tmp_path)
    assert len(second) == 3 and all(second.values())  # caching is across runs


def test_a_huge_path_is_keyed_by_stat_data_and_a_vast_folder_by_its_path(tmp_path, monkeypatch):
    from loopline.pipelines.local import cache as cache_module

    cache = TaskCache(tmp_path / "cache")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    monkeypatch.setattr(cache_module, "MAX_HASHED_BYTES", 10)
    before = cache.path_hash(big)
    assert before.startswith("stat:")  # never read whole
    os.utime(big, ns=(1, 1))
    assert cache.path_hash(big) != before  # any change is a miss
    folder = tmp_path / "home"
    folder.mkdir()
    for name in "abc":
        (folder / name).write_text(name)
    monkeypatch.setattr(cache_module, "MAX_FILES", 2)
    assert cache.path_hash(folder) == f"path:{folder}"
