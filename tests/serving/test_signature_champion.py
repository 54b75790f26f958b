"""A registered MLflow Model as the server's champion: loaded only when its files are the
registered ones; a version that fails to load leaves the current one serving, and
`loopline serve` refuses a tampered champion (exit 2) before starting anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.core.settings import load_settings
from loopline.ml.mlflow_model import MODEL
from loopline.ml.model_contract import ModelTampered
from loopline.serving.champion import ChampionHolder
from loopline.serving.server import preflight
from loopline.storage.registry import Registry, model_folder
from tests.ml.test_registration import frame, register, rows, save


def first_champion(tmp_path, monkeypatch):
    """Model "m": a scikit-learn classifier registered as v1, the champion; the settings
    and the evaluation and training rows a later version is registered with."""
    monkeypatch.setenv("LOOPLINE_MODEL_NAME", "m")
    settings = load_settings()
    evaluation = rows(tmp_path, "eval", frame(600, 1))
    train = rows(tmp_path, "train", frame(1500, 0))
    register(settings, tmp_path, save(tmp_path / "v1", frame(300, 0, flip=0.3)), evaluation, train)
    return settings, evaluation, train


def test_a_tampered_new_champion_leaves_the_old_one_serving(home, tmp_path, monkeypatch):
    settings, evaluation, train = first_champion(tmp_path, monkeypatch)
    holder = ChampionHolder(settings, pinned=None, poll_s=60)
    assert holder.refresh() and holder.current.version == "1"
    assert holder.current.answer([{"x": 1.0, "colour": "red"}])[0] == ["yes"]
    second = register(settings, tmp_path, save(tmp_path / "v2", frame(3000, 2)), evaluation, train)
    assert second["promoted"]
    champion = Registry(settings).champion("m")
    weights = next((model_folder(settings, champion) / MODEL).glob("model.*"))
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ModelTampered):
        holder.refresh()
    assert holder.current.version == "1"  # still answering
    with pytest.raises(ModelTampered, match="not the model that was registered") as raised:
        preflight(settings, None)
    assert raised.value.exit_code == 2
    env = dict(os.environ)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not the model that was registered" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_the_documented_example_of_a_signature_model_is_one_it_takes(home, tmp_path, monkeypatch):
    """ "Try it out" must succeed for any model, not only one of 64 numbers: the example is
    a row of the model's own reference data, in its named columns."""
    from loopline.serving.page import document
    from loopline.serving.requests import Limits

    settings, _, _ = first_champion(tmp_path, monkeypatch)
    holder = ChampionHolder(settings, pinned=None, poll_s=60)
    assert holder.refresh()
    spec = {"paths": {"/predict": {"post": {"requestBody": {"content": {"application/json": {"example": {"instances": [[0.0] * 64]}}}}}}}}  # fmt: skip
    shown = document(spec, "m", holder.current)
    example = shown["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    instances = example["example"]["instances"]
    assert set(instances[0]) == {"x", "colour"}, instances
    body = json.dumps(example["example"]).encode()
    parsed = holder.current.parse(body, "application/json", Limits())
    labels, _ = holder.current.answer(parsed)
    assert labels[0] in holder.current.classes
    assert shown["info"]["title"] == "loopline prediction API" and "**m**, version 1" in shown["info"]["description"]  # fmt: skip
    # Another name has no champion: status says which models exist instead.
    from typer.testing import CliRunner

    from loopline.cli import app

    status = CliRunner().invoke(app, ["status", "--model", "digits-classifier"])
    assert status.exit_code == 0, status.output
    assert "Registered models: m; choose one with --model NAME" in " ".join(status.output.split())
