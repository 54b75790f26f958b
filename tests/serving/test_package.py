"""`loopline package` builds a real Bento for the champion (Docker is not needed to build)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loopline.cli import app
from loopline.serving.bento import build_bento

pytestmark = pytest.mark.xdist_group("served")  # shares the session's server


def test_bento_holds_the_service_the_packages_and_the_model_reference(served, tmp_path):
    settings = dataclasses.replace(served.settings, home=tmp_path / "home")
    built = build_bento(settings)
    assert built.model_version == "1" and built.tag.startswith("loopline-digits-classifier:v1-")
    bento = Path(built.path)
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "loopline.serving.service:Predictor"
    assert manifest["labels"]["loopline.model_version"] == "1"
    assert {s["name"] for s in manifest["services"]} == {"loopline"}
    # the installed package, as installed: one namespace, nothing else of the checkout
    src = bento / "src"
    assert (src / "loopline" / "serving" / "service.py").exists()
    assert {p.name for p in src.iterdir()} <= {"loopline", "bentofile.yaml"}
    assert not list(src.rglob("tests")) and not list(src.rglob("pyproject.toml"))
    assert not list((bento / "src").rglob("*.db")), "no registry or log files in the Bento"
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0" in requirements and "bentoml==1.4" in requirements
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "\nUSER bentoml" in dockerfile  # the image runs as a non-root user


def test_package_without_a_champion_is_a_clear_error(home):
    answer = CliRunner().invoke(app, ["package"])
    assert answer.exit_code == 1
    assert "has no champion to package" in answer.output
