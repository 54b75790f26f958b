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
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    assert answer["outputs"] == {"Output": 42}
    assert answer["tasks"] == [
        {
            "name": "add",
            "status": "succeeded",
            "cached": False,
            "seconds": answer["tasks"][0]["seconds"],
        }
    ]


def test_unreachable_prefect_api_is_a_clear_error_not_a_traceback(home, pipeline_file):
    env = {**os.environ, "LOOPLINE_HOME": str(home), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "run", str(pipeline_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Failed to reach API" in result.stderr and "details: " in result.stderr
    assert "Traceback" not in result.stderr and "PREFECT_API_URL points at" in result.stderr


TWO_PIPELINES = (
    PIPELINE.read_text()
    + """

@dsl.pipeline
def plus_two(x: int = 1) -> int:
    return add(a=x, b=2).output
"""
)


def test_a_file_with_several_pipelines_needs_pipeline_name_and_runs_the_one_named(home, tmp_path):
    path = tmp_path / "two.py"
    path.write_text(TWO_PIPELINES)
    ambiguous = CliRunner().invoke(app, ["run", str(path), "--engine", "kfp-local"])
    assert ambiguous.exit_code == 2
    assert "plus_one, plus_two" in ambiguous.output and "--pipeline NAME" in ambiguous.output
    unknown = CliRunner().invoke(app, ["run", str(path), "--pipeline", "plus_three"])
    assert unknown.exit_code == 2 and "no pipeline 'plus_three'" in unknown.output
    named = CliRunner().invoke(
        app,
        [
            "run",
            str(path),
            "--pipeline",
            "plus_two",
            "--engine",
            "kfp-local",
            "--param",
            "x=40",
            "--json",
        ],
    )
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["outputs"] == {"Output": 42}
    compiled = CliRunner().invoke(
        app, ["compile", str(path), "--pipeline", "plus_one", "-o", str(tmp_path / "one.yaml")]
    )
    assert compiled.exit_code == 0, compiled.output


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import not_a_module_anywhere\n", "line 1 failed to import: ModuleNotFoundError"),
        ("from kfp import dsl\nx = 1 / 0\n", "line 2 failed to import: ZeroDivisionError"),
        ("def broken(:\n", "failed to import: SyntaxError"),
    ],
)
def test_a_file_that_fails_to_import_is_a_usage_error_without_a_traceback(
    home, tmp_path, source, expected
):
    path = tmp_path / "bad.py"
    path.write_text(source)
    result = subprocess.run(
        [str(VENV_BIN / "loopline"), "run", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "LOOPLINE_HOME": str(home)},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_a_required_artifact_input_is_refused_before_anything_runs(home, tmp_path):
    path = tmp_path / "needs_artifact.py"
    path.write_text(
        "from kfp import dsl\nfrom kfp.dsl import Dataset, Input\n\n"
        "@dsl.component\ndef size(data: Input[Dataset]) -> int:\n    return 1\n\n"
        "@dsl.pipeline\ndef needs(in_dataset: Input[Dataset]) -> int:\n"
        "    return size(data=in_dataset).output\n"
    )
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert "takes the artifact in_dataset" in result.output
    assert not (home / "artifacts").exists()  # nothing ran


def test_a_pipeline_imported_into_a_file_does_not_make_it_ambiguous(home, tmp_path, monkeypatch):
    (tmp_path / "shared_steps.py").write_text(PIPELINE.read_text())
    path = tmp_path / "mine.py"
    path.write_text(
        "from kfp import dsl\nfrom shared_steps import add, plus_one  # noqa\n\n"
        "@dsl.pipeline\ndef mine(x: int = 1) -> int:\n"
        "    return add(a=x, b=100).output\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(app, ["run", str(path), "--engine", "kfp-local", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"] == {"Output": 101}
