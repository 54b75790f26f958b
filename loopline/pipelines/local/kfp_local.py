"""The ``kfp-local`` engine: ``kfp.local`` runs each step as a subprocess, no caching.

Kept for parity checks and as the reference behaviour; the Prefect engine is the default.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import yaml

from loopline.core.settings import Settings
from loopline.pipelines.ir import load
from loopline.pipelines.local.artifacts import latest_run_dir, pipeline_root
from loopline.pipelines.local.results import RunResult


def installs_anything(ir) -> bool:
    """Whether a component's command would pip-install anything: its packages, or a kfp
    other than the one installed here."""
    import kfp

    from loopline.pipelines.local.component_envs import requirements

    for executor in ir.spec.get("deploymentSpec", {}).get("executors", {}).values():
        command = executor.get("container", {}).get("command", [])
        script = " ".join(command)
        pins = re.findall(r"kfp==([\w.]+)", script)
        if requirements(command) or any(pin != kfp.__version__ for pin in pins):
            return True
    return False


def refuse_what_kfp_local_cannot_run(ir) -> None:
    """kfp.local stops with a bare ValueError on dsl.OneOf over artifacts: say so first."""
    from loopline.pipelines.ir import UnsupportedPipeline

    for name, component in ir.spec["components"].items():
        for output, spec in (
            component.get("dag", {}).get("outputs", {}).get("artifacts", {}).items()
        ):
            if len(spec.get("artifactSelectors", [])) > 1:
                raise UnsupportedPipeline(
                    f"kfp.local cannot run dsl.OneOf over artifacts (output {output} of "
                    f"{name}); run it with the default engine: --engine prefect"
                )


def run_local(source: object, arguments: dict, settings: Settings) -> RunResult:
    from kfp import components, local

    ir = load(source)
    refuse_what_kfp_local_cannot_run(ir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(yaml.safe_dump(ir.spec))
        pipeline = components.load_component_from_file(str(path))
    # Steps are subprocesses: they read the same settings from the environment.
    os.environ["LOOPLINE_HOME"] = str(settings.home)
    local.init(
        # kfp.local pip-installs a component's packages (and the kfp it was compiled with)
        # into the interpreter it runs: in a virtual environment of its own, never loopline's.
        runner=local.SubprocessRunner(use_venv=installs_anything(ir)),
        pipeline_root=str(pipeline_root(settings)),
        raise_on_error=True,
    )
    started = time.time() - 1
    error, outputs = None, {}
    try:
        task = pipeline(**arguments)
        outputs = {k: _value(v) for k, v in task.outputs.items()} if task else {}
    except RuntimeError as exc:  # kfp.local reports a failed task this way
        error = str(exc)
    run_dir = latest_run_dir(settings, ir.name, since=started)
    return RunResult(
        succeeded=error is None,
        pipeline=ir.name,
        run_name=run_dir.name if run_dir else "",
        run_dir=run_dir,
        outputs=outputs,
        task_outputs=_layout(run_dir),
        error=error,
    )


def _layout(run_dir: Path | None) -> dict[str, dict[str, str]]:
    """kfp.local's folders: ``<run>/<task>/<output>``."""
    if run_dir is None:
        return {}
    return {
        task.name: {
            out.name: str(out) for out in task.iterdir() if out.name != "executor_output.json"
        }
        for task in run_dir.iterdir()
        if task.is_dir()
    }


def _value(value):
    return value.path if hasattr(value, "schema_title") else value
