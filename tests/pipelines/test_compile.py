"""Golden test: the compiled training pipeline's structure matches the checked-in one.

Regenerate after an intended change with ``LOOPLINE_UPDATE_GOLDEN=1 pytest tests/pipelines``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from loopline.core.images import PLATFORM_IMAGE
from loopline.pipelines.ir import PipelineIR, from_documents, load

GOLDEN = Path(__file__).parent / "golden" / "training_structure.json"


def structure(documents: PipelineIR) -> dict:
    """What must not change by accident: tasks, wiring, interfaces, images, commands, and
    the Kubernetes Secret each executor reads its settings from."""
    ir = documents.spec
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
                [
                    *c.get("inputDefinitions", {}).get("parameters", {}),
                    *c.get("inputDefinitions", {}).get("artifacts", {}),
                ]
            ),
            "outputs": {
                k: v["artifactType"]["schemaTitle"]
                for k, v in c.get("outputDefinitions", {}).get("artifacts", {}).items()
            },
        }
        for name, c in ir["components"].items()
    }
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
        "secrets": {
            label: sorted(
                s["secretName"] for s in documents.kubernetes(label).get("secretAsEnv", [])
            )
            for label in executors
        },
    }


def test_compiled_training_pipeline_matches_golden(tmp_path):
    target = load("training").write(tmp_path / "training.yaml")
    got = structure(from_documents(target.read_text()))
    if os.environ.get("LOOPLINE_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_components_run_in_the_platform_image_and_install_nothing(tmp_path):
    got = structure(from_documents(load("training").write(tmp_path / "t.yaml").read_text()))
    assert got["images"] == [PLATFORM_IMAGE]
    assert got["installs_at_run_time"] is False
    assert got["tasks"]["train"]["after"] == ["ingest", "validate-data"]
    assert all(secrets == ["loopline-settings"] for secrets in got["secrets"].values())


def test_the_gpu_target_gives_the_train_task_a_gpu_the_cuda_image_and_the_settings(tmp_path):
    """`loopline compile training --target gpu`, as the gpu overlay's cluster runs it."""
    from typer.testing import CliRunner

    from loopline.cli import app
    from loopline.core import images
    from loopline.pipelines.ir import load

    out = tmp_path / "training-gpu.yaml"
    result = CliRunner().invoke(
        app,
        ["compile", "training", "--target", "gpu", "-o", str(out)],
        env={"LOOPLINE_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    ir = load(out)
    executors = ir.spec["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["image"] == images.platform("cuda")
    assert {"name": "LOOPLINE_TRAIN_GPU", "value": "on"} in train["env"]
    kubernetes = ir.platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert kubernetes["exec-train"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    for name, executor in executors.items():  # every task: the settings Secret and limits
        assert kubernetes[name]["secretAsEnv"][0]["secretName"] == "loopline-settings", name
        assert executor["container"]["resources"]["resourceMemoryLimit"], name
        if name != "exec-train":
            assert "accelerator" not in executor["container"]["resources"], name
            assert executor["container"]["image"] == images.platform("cpu"), name
    cpu = CliRunner().invoke(app, ["compile", "training", "-o", str(tmp_path / "cpu.yaml")])
    assert cpu.exit_code == 0, cpu.output
    assert (
        "accelerator"
        not in load(tmp_path / "cpu.yaml").spec["deploymentSpec"]["executors"]["exec-train"][
            "container"
        ]["resources"]
    )


def test_compiling_the_built_in_pipelines_imports_no_torch_and_no_pandas(tmp_path):
    """Compiling is every first `loopline run training` in a home: importing torch and
    pandas there (for TrainConfig's defaults) cost 1.75 CPU s before its first task."""
    code = (
        "import json, sys\n"
        "from loopline.pipelines import builtin_pipelines\n"
        "from loopline.pipelines.ir import compile_pipeline\n"
        "for name in builtin_pipelines.PIPELINES:\n"
        "    compile_pipeline(builtin_pipelines.get(name))\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas'})))\n"
    )
    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == [], done.stdout
