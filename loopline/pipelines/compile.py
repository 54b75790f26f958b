"""Compile a pipeline to KFP v2 IR YAML, the format Kubeflow Pipelines runs."""

from __future__ import annotations

from pathlib import Path

from loopline.pipelines.ir import PipelineIR, load


def compile_pipeline(source: object, target: Path) -> Path:
    """Write the IR of a built-in name, a ``.py`` pipeline file or a pipeline object."""
    return write_ir(load(source), target)


def write_ir(ir: PipelineIR, target: Path) -> Path:
    """The IR as KFP writes it: the pipeline spec, then the platform spec if there is one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(ir.to_yaml())
    return target
