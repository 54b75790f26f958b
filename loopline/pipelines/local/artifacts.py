"""Where pipeline artifacts live, and how to find them after a run.

Artifacts go under ``LOOPLINE_HOME/artifacts`` (the KFP pipeline root), one folder per
run: ``<pipeline>-<timestamp>/<task>/<output>``. On a cluster the pipeline root is an
object-store URI and KFP owns the layout; the lineage inside each artifact is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

from loopline.core.settings import Settings


def pipeline_root(settings: Settings) -> Path:
    settings.artifact_root.mkdir(parents=True, exist_ok=True)
    return settings.artifact_root


def latest_run_dir(settings: Settings, pipeline: str, *, since: float = 0.0) -> Path | None:
    """The newest run folder of ``pipeline`` created at or after ``since`` (epoch seconds)."""
    runs = [
        p
        for p in pipeline_root(settings).glob(f"{pipeline}-*")
        if p.is_dir() and p.stat().st_mtime >= since
    ]
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None
