"""Golden test: the compiled training pipeline's structure matches the checked-in one.

Regenerate after an intended change with ``LOOPLINE_UPDATE_GOLDEN=1 pytest tests/pipelines``.
"""

import json
import os
from pathlib import Path

import yaml

from components.settings import PLATFORM_IMAGE
from pipelines.compile import compile_pipeline

GOLDEN = Path(__file__).parent / "golden" / "training_structure.json"


def structure(ir: dict) -> dict:
    """What must not change by accident: tasks, wiring, interfaces, images, commands."""
    executors = ir["deploymentSpec"]["executors"]
    tasks = {}
    for name, task in ir["root"]["dag"]["tasks"].items():
        inputs = task.get("inputs", {})
        tasks[name] = {
            "component": task["componentRef"]["name"],
            "after": sorted(task.get("dependentTasks", [])),
            "artifacts": {
                k: f"{v['taskOutputArtifact']['producerTask']}.{v['taskOutputArtifact']['outputArtifactKey']}"
                for k, v in inputs.get("artifacts", {}).items()
            },
            "parameters": sorted(inputs.get("parameters", {})),
        }
    components = {
        name: {
            "inputs": sorted(
                [*c.get("inputDefinitions", {}).get("parameters", {}),
                 *c.get("inputDefinitions", {}).get("artifacts", {})]
            ),
            "outputs": {
                k: v["artifactType"]["schemaTitle"]
                for k, v in c.get("outputDefinitions", {}).get("artifacts", {}).items()
            },
        }
        for name, c in ir["components"].items()
    }  # fmt: skip
    return {
        "inputs": {
            k: v["parameterType"] for k, v in ir["root"]["inputDefinitions"]["parameters"].items()
        },
        "tasks": tasks,
        "components": components,
        "images": sorted({e["container"]["image"] for e in executors.values()}),
        "installs_at_run_time": any(
            "pip install" in " ".join(e["container"].get("command", [])) for e in executors.values()
        ),
    }


def test_compiled_training_pipeline_matches_golden(tmp_path):
    target = compile_pipeline("training", tmp_path / "training.yaml")
    got = structure(yaml.safe_load(target.read_text()))
    if os.environ.get("LOOPLINE_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_components_run_in_the_platform_image_and_install_nothing(tmp_path):
    ir = yaml.safe_load(compile_pipeline("training", tmp_path / "t.yaml").read_text())
    got = structure(ir)
    assert got["images"] == [PLATFORM_IMAGE]
    assert got["installs_at_run_time"] is False
    assert got["tasks"]["train"]["after"] == ["ingest", "validate-data"]
