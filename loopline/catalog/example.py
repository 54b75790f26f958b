"""Runs a component's example through loopline's executor: the compiled component (what
would be published), its declared packages installed, artifact inputs imported from files
in the component's folder."""

from __future__ import annotations

from pathlib import Path

from loopline.catalog.folder import META, ComponentFolder
from loopline.core.settings import Settings

METRICS = ("system.Metrics", "system.ClassificationMetrics", "system.SlicedClassificationMetrics")


def run_example(folder: ComponentFolder, text: str, spec: dict, settings: Settings, engine=None):
    """The outputs the example produced; raises, naming what is wrong, when it fails."""
    from kfp import components, dsl
    from kfp.dsl.types import artifact_types

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
    for name, relative in folder.example_files.items():
        path = (folder.path / relative).resolve()
        if not path.exists():
            raise ValueError(f"{META} [example.files] {name} = {relative!r}: no such file")
        files[name] = path
    component = components.load_component_from_text(text)

    @dsl.pipeline(name=f"example-{folder.name}")
    def example():
        kwargs = dict(folder.example_inputs)
        for name, path in files.items():
            title = artifacts[name]["artifactType"]["schemaTitle"]
            kind = artifact_types._SCHEMA_TITLE_TO_TYPE.get(title, dsl.Artifact)
            kwargs[name] = dsl.importer(artifact_uri=str(path), artifact_class=kind).output
        component(**kwargs)

    result = engine_run(example, {}, settings, engine)
    if not result.succeeded:
        raise RuntimeError(result.error)
    task = next(n for n in result.task_outputs if not n.startswith("importer"))
    return declared_outputs(spec, result.task_outputs[task])


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
