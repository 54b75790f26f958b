"""Runs a component's example through loopline's executor: the compiled component (what
would be published), its declared packages installed, artifact inputs imported from files
in the component's folder.

A submitted component's example runs in the sandbox (:mod:`loopline.core.sandbox`):
:func:`run_sandboxed` makes its packages' environment first (the sandbox has no network),
then runs this module inside, which executes the example with the
:class:`~loopline.pipelines.local.plain_engine.PlainEngine` (the task in a process of its
own) and writes what it produced to the report descriptor. The platform's own components
run theirs on the caller's engine (``ComponentFolder.example_runner``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from loopline.catalog.folder import META, ComponentFolder
from loopline.core.settings import Settings

METRICS = ("system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics")


TIMEOUT_S = 600


def run_sandboxed(folder: ComponentFolder, text: str, spec: dict, settings: Settings):
    """Run the example of a submitted component in the sandbox; what it produced."""
    from loopline.catalog.folder import platform_places
    from loopline.core.sandbox import INSIDE, Sandbox
    from loopline.pipelines.local import component_envs

    files = _example_files(folder, spec)
    command = spec["deploymentSpec"]["executors"]
    wanted = component_envs.requirements(next(iter(command.values()))["container"]["command"])
    envs = settings.home / "envs"
    readable = [folder.path.resolve(), *files.values()]
    if wanted:  # made here, with the network; used read-only inside
        python = component_envs.python_for(settings.home, wanted, wheels_only=True)
        readable.append(python.parent.parent)
    with Sandbox(hide=platform_places(settings), readable=readable) as box:
        (box.scratch / "component.yaml").write_text(text)
        done = box.run(
            [sys.executable, "-I", "-m", "loopline.catalog.example"]
            + [str(folder.path.resolve()), str(INSIDE / "component.yaml"), str(envs)]
            + ["{report_fd}"],
            timeout_s=TIMEOUT_S,
            env={"LOOPLINE_HOME": str(INSIDE / "home" / ".loopline")},
        )
        try:
            report = json.loads(done.report.split(b"\n", 1)[0])
        except ValueError:
            last = (done.output.strip().splitlines() or ["no output"])[-1]
            if done.returncode is None:
                last = f"it ran over {TIMEOUT_S} s"
            raise RuntimeError(f"it ended without a report: {last}") from None
        if report.get("error"):
            raise RuntimeError(report["error"])
        # Judged here, on the files as they are, not on the report's say-so.
        produced = {name: _outside(value, box.scratch) for name, value in report["outputs"].items()}
        return declared_outputs(spec, produced)


def _outside(value, scratch: Path):
    from loopline.core.sandbox import INSIDE

    if isinstance(value, str) and value.startswith(f"{INSIDE}/"):
        return str(scratch / Path(value).relative_to(INSIDE))
    return value


def main(folder_path: str, component_yaml: str, envs: str, report_fd: int) -> None:
    """Inside the sandbox: run the example, write {"outputs"} or {"error"} to the report."""
    import os

    from loopline.catalog.folder import read
    from loopline.core.settings import load_settings
    from loopline.pipelines.local.plain_engine import PlainEngine

    try:
        import yaml

        text = Path(component_yaml).read_text()
        folder = read(folder_path)
        result = _run(folder, text, yaml.safe_load(text), PlainEngine(load_settings(), Path(envs)))
        report = {"outputs": result}
    except Exception as exc:
        report = {"error": str(exc)}
    # One line from the start, as the probe writes its report (loopline.catalog.probe).
    os.pwrite(report_fd, json.dumps(report, default=str).encode() + b"\n", 0)
    os._exit(0)


def _example_files(folder: ComponentFolder, spec: dict) -> dict[str, Path]:
    declared = spec["root"].get("inputDefinitions", {})
    parameters, artifacts = declared.get("parameters", {}), declared.get("artifacts", {})
    unknown = sorted(
        (set(folder.example_inputs) - set(parameters))
        | (set(folder.example_files) - set(artifacts))
    )
    if unknown:
        raise ValueError(
            f"{META} gives {', '.join(unknown)}, which the component does not take "
            f"(its inputs: {', '.join([*parameters, *artifacts]) or 'none'})"
        )
    files = {}
    home = folder.path.resolve()
    for name, relative in folder.example_files.items():
        path = (folder.path / relative).resolve()  # links followed: where it really is
        if not path.is_relative_to(home):
            raise ValueError(
                f"{META} [example.files] {name} = {relative!r} is outside the component's "
                "folder; put the example's files in it"
            )
        if not path.exists():
            raise ValueError(f"{META} [example.files] {name} = {relative!r}: no such file")
        files[name] = path
    return files


def _run(folder: ComponentFolder, text: str, spec: dict, engine) -> dict:
    """Run the example pipeline on ``engine``: the task's outputs by name."""
    from kfp import components, dsl
    from kfp.dsl.types import artifact_types

    files = _example_files(folder, spec)
    artifacts = spec["root"].get("inputDefinitions", {}).get("artifacts", {})
    component = components.load_component_from_text(text)

    @dsl.pipeline(name=f"example-{folder.name}")
    def example():
        kwargs = dict(folder.example_inputs)
        for name, path in files.items():
            title = artifacts[name]["artifactType"]["schemaTitle"]
            kind = artifact_types._SCHEMA_TITLE_TO_TYPE.get(title, dsl.Artifact)
            kwargs[name] = dsl.importer(artifact_uri=str(path), artifact_class=kind).output
        component(**kwargs)

    result = engine.run(example, {}, enable_cache=False)
    if not result.succeeded:
        raise RuntimeError(result.error)
    task = next(n for n in result.task_outputs if not n.startswith("importer"))
    return result.task_outputs[task]


def declared_outputs(spec: dict, produced: dict) -> list[str]:
    """The outputs a task produced, when it produced every one it declares; else raises."""
    outputs = spec["root"].get("outputDefinitions", {})
    missing = [n for n in outputs.get("parameters", {}) if n not in produced]
    missing += [
        n
        for n, value in outputs.get("artifacts", {}).items()
        if n not in produced
        or not (
            Path(produced[n]).exists()  # metrics may live in metadata only
            or value["artifactType"]["schemaTitle"] in METRICS
        )
    ]
    if missing:
        raise RuntimeError(f"it did not produce its declared output(s) {', '.join(missing)}")
    return sorted(produced)


def engine_run(pipeline, arguments: dict, settings: Settings, engine=None):
    """Run ``pipeline`` uncached on ``engine``, or on a Prefect engine of its own."""
    if engine is not None:
        return engine.run(pipeline, arguments, enable_cache=False)
    from loopline.pipelines.local.prefect_engine import PrefectEngine

    own = PrefectEngine(settings)
    try:
        return own.run(pipeline, arguments, enable_cache=False)
    finally:
        own.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
