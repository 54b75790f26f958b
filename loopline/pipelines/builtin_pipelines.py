"""The built-in pipelines, by the name the CLI uses; each is imported only when asked for."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

PIPELINES = {
    "training": "loopline.pipelines.training:training",
    "retraining": "loopline.pipelines.retraining:retraining",
}


def get(name: str, target: str = "cpu"):
    """The built-in pipeline ``name``, built for ``target`` (:mod:`loopline.pipelines.cluster.pods`)."""
    from loopline.pipelines.cluster import pods as cluster

    try:
        module, attribute = PIPELINES[name].split(":")
    except KeyError:
        raise KeyError(
            f"unknown pipeline {name!r}; built-in pipelines are: {', '.join(PIPELINES)}"
        ) from None
    return cluster.build(getattr(importlib.import_module(module), attribute), target)


def compiled(name: str, target: str = "cpu"):
    """The IR of built-in pipeline ``name`` for ``target``, compiled once per loopline
    source, kfp and Python and kept under ``LOOPLINE_HOME/cache/pipelines``. Building it
    imports its components' modules and kfp-kubernetes and runs kfp's compiler: about
    1.4 CPU s of a home's first run of it (3.5 when that imported torch, for the same IR)."""
    from loopline.core.settings import load_settings
    from loopline.pipelines.ir import PipelineIR, compile_pipeline

    folder = load_settings().home / "cache" / "pipelines"
    path = folder / f"{name}-{target}-{_fingerprint()}.json"
    try:
        return PipelineIR(*json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    ir = compile_pipeline(get(name, target))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{name}-{target}-*.json"):
            stale.unlink(missing_ok=True)
        partial = folder / f".{path.name}.{os.getpid()}"
        partial.write_text(json.dumps([ir.spec, ir.platform]))
        os.replace(partial, path)
    except OSError:  # a read-only home compiles every time
        pass
    return ir


def _fingerprint() -> str:
    """Changes with any of loopline's source files, the kfp release or the interpreter."""
    from importlib.metadata import version  # not kfp's own: importing kfp costs 0.3-1 s

    package = Path(__file__).parents[1]
    digest = hashlib.sha256(f"{version('kfp')} {sys.version}".encode())
    for source in sorted(package.rglob("*.py")):
        stat = source.stat()
        digest.update(f"{source.relative_to(package)} {stat.st_mtime_ns} {stat.st_size}\n".encode())
    return digest.hexdigest()[:16]
