"""`loopline run` on a user's pipeline file and on compiled IR, with both engines."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from tests.conftest import VENV_BIN

PIPELINE = Path(__file__).parents[1] / "pipelines" / "plus_one.py"


@pytest.fixture
def pipeline_file(tmp_path):
    path = tmp_path / "plus_one.py"
    path.write_text(PIPELINE.read_text())
    return path


def test_kfp_local_engine_runs_a_pipeline_file(home, pipeline_file):
    result = CliRunner().invoke(
        app, ["run", str(pipeline_file), "--engine", "kfp-local", "--param", "x=4", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["status"] == "succeeded" and answer["outputs"] == {"Output": 5}


def test_unknown_parameter_of_a_file_pipeline_is_a_usage_error(home, pipeline_file):
    result = CliRunner().invoke(app, ["run", str(pipeline_file), "--param", "y=4"])
    assert result.exit_code == 2 and "its parameters are: x" in result.output


@pytest.mark.slow
def test_prefect_engine_runs_compiled_ir(home, pipeline_file, tmp_path, prefect_api):
    ir = tmp_path / "plus_one.yaml"
    assert CliRunner().invoke(app, ["compile", str(pipeline_file), "-o", str(ir)]).exit_code == 0
    env = {**os.environ, "LOOPLINE_HOME": str(home)}
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "run", str(ir), "--param", "x=41", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    assert answer["outputs"] == {"Output": 42}
    assert answer["tasks"] == [{"name": "add", "status": "succeeded", "cached": False,
                                "seconds": answer["tasks"][0]["seconds"]}]  # fmt: skip


def test_unreachable_prefect_api_is_a_clear_error_not_a_traceback(home, pipeline_file):
    env = {**os.environ, "LOOPLINE_HOME": str(home), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "run", str(pipeline_file)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Failed to reach API" in result.stderr and "details: " in result.stderr
    assert "Traceback" not in result.stderr and "PREFECT_API_URL points at" in result.stderr


@pytest.mark.slow
def test_a_steps_late_output_goes_to_the_workers_log_not_the_terminal(home, tmp_path, prefect_api):
    pipeline = tmp_path / "late_output.py"
    pipeline.write_text((Path(__file__).parents[1] / "pipelines" / "late_output.py").read_text())
    env = {**os.environ, "LOOPLINE_HOME": str(home)}
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "run", str(pipeline), "--no-cache"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LATE LINE" not in result.stdout + result.stderr
    assert "LATE LINE FROM A FINISHED STEP" in (home / "logs" / "component-workers.log").read_text()
