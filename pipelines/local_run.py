"""Run a pipeline with ``kfp.local``: one subprocess per step, in the current environment."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from components.settings import Settings
from pipelines import catalog
from pipelines.artifacts import latest_run_dir, pipeline_root


@dataclass
class RunResult:
    succeeded: bool
    run_dir: Path | None
    error: str | None = None


def run_local(name: str, arguments: dict, settings: Settings) -> RunResult:
    from kfp import local

    pipeline = catalog.get(name)
    # Steps are subprocesses: they read the same settings from the environment.
    os.environ["LOOPLINE_HOME"] = str(settings.home)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root(settings)),
        raise_on_error=True,
    )
    started = time.time() - 1
    try:
        pipeline(**arguments)
    except RuntimeError as exc:  # kfp.local reports a failed task this way
        return RunResult(False, latest_run_dir(settings, name, since=started), str(exc))
    return RunResult(True, latest_run_dir(settings, name, since=started))
