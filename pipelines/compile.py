"""Compile a pipeline to KFP v2 IR YAML, the format Kubeflow Pipelines runs."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines import catalog


def compile_pipeline(name: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(catalog.get(name), str(target))
    return target
