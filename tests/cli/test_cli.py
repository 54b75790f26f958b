"""The CLI contract: help text, exit codes and JSON shapes scripts rely on."""

import json

import yaml
from typer.testing import CliRunner

from loopline.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "compile", "status", "demo"):
        assert command in result.output


def test_usage_errors_exit_2(home):
    assert runner.invoke(app, ["run", "nope"]).exit_code == 2
    missing = runner.invoke(app, ["run", "training", "--dataset", str(home / "none.csv")])
    assert missing.exit_code == 2 and "neither a built-in dataset" in missing.output
    assert runner.invoke(app, ["run", "training", "--epochs", "0"]).exit_code == 2
    assert runner.invoke(app, ["run", "training", "--arch", "resnet"]).exit_code == 2
    unknown = runner.invoke(app, ["run", "training", "--param", "learning_rate=1"])
    assert unknown.exit_code == 2 and "weight_decay" in unknown.output  # lists the real names
    assert runner.invoke(app, ["run", "training", "--param", "lr"]).exit_code == 2


def test_params_are_json_when_they_parse():
    from loopline.cli.options import parse_params

    parsed = parse_params(["lr=0.01", "augment=false", "model_name=x-1", "patience=3"])
    assert parsed == {"lr": 0.01, "augment": False, "model_name": "x-1", "patience": 3}


def test_bad_configuration_exits_2_naming_the_variable(home, monkeypatch):
    monkeypatch.setenv("LOOPLINE_GATE_METRIC", "auc")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2 and "LOOPLINE_GATE_METRIC" in result.output


def test_status_json_without_a_champion(home):
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "model": "digits-classifier",
        "champion": None,
        "last_check": None,
        "last_retraining": None,
        "open_trigger": None,
        "registered_models": [],  # no other name to suggest
    }


def test_compile_writes_kfp_ir(home, tmp_path):
    target = tmp_path / "out" / "training.yaml"
    assert runner.invoke(app, ["compile", "training", "-o", str(target)]).exit_code == 0
    ir = next(yaml.safe_load_all(target.read_text()))  # then the platform spec
    assert ir["pipelineInfo"]["name"] == "training"
    assert ir["schemaVersion"].startswith("2.")


def test_feedback_attaches_labels_from_a_csv(home, tmp_path):
    import numpy as np

    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database
    from loopline.storage.feedback import FeedbackStore
    from loopline.storage.predictions import Answer, PredictionLog

    database = open_database(load_settings(), migrate=True)
    log = PredictionLog(database)
    log.append(Answer("req-1", "1", np.zeros((1, 1), np.float32), ["3"], np.ones((1, 1))))
    log.close()
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label,item\nreq-1,5,\nreq-404,2,0\n")  # empty item: 0
    result = runner.invoke(app, ["feedback", str(labels)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "stored": 1,
        "repeated": 0,
        "conflicts": 0,
        "unknown": ["req-404#0"],
        "unknown_count": 1,
    }
    assert "as cli:" in " ".join(result.output.split())  # who sent them

    def stored() -> list[str]:
        return FeedbackStore(database).labelled()["label"].tolist()

    # Bad rows refuse the whole file, name the line, and store nothing (exit 2).
    for name, text, says in [
        ("bad.csv", "id,label\nreq-1,5\n", "column(s) request_id"),
        ("empty-label.csv", "request_id,label\nreq-1,7\nreq-1,\n", "line 3.label must be a class"),
        ("item.csv", "request_id,label,item\nreq-1,7,x\n", "line 2.item must be the instance"),
        ("huge.csv", f"request_id,label,item\nreq-1,7,{2**63}\n", "line 2.item must be the"),
        ("ragged.csv", "request_id,label\nreq-1,7,0\n", "line 2: more fields"),
    ]:
        (tmp_path / name).write_text(text)
        bad = runner.invoke(app, ["feedback", str(tmp_path / name)])
        assert bad.exit_code == 2 and says in " ".join(bad.output.split()), (name, bad.output)
        assert stored() == ["5"], name


def test_serve_with_a_bad_key_file_exits_2_at_once_naming_it(home, monkeypatch, tmp_path):
    """The issue's case restarted the service 18 times over 5 minutes, then exited 1."""
    monkeypatch.setenv("LOOPLINE_API_KEY_FILE", str(tmp_path / "nonexistent" / "key"))
    result = runner.invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "LOOPLINE_API_KEY_FILE" in result.output and "cannot be read" in result.output
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("LOOPLINE_API_KEY_FILE", str(tmp_path / "empty"))
    empty = runner.invoke(app, ["serve", "--port", "1"])
    assert empty.exit_code == 2 and "is empty" in empty.output
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00key")
    monkeypatch.setenv("LOOPLINE_API_KEY_FILE", str(tmp_path / "binary"))
    binary = runner.invoke(app, ["serve", "--port", "1"])
    assert binary.exit_code == 2 and "is not text" in binary.output


def test_bad_transfer_parameters_exit_2_before_the_pipeline_runs(home, tmp_path):
    """An unknown architecture, weights of another architecture and a pickle that is not
    weights-only: each exits 2 naming the problem, and nothing runs (no run folder)."""
    import pickle

    from safetensors.torch import save_file

    from loopline.ml.model_spec import ModelSpec
    from loopline.ml.models import build_model

    other = build_model(ModelSpec(arch="resnet50", input_shape=[3, 32, 32], num_classes=2))
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()},
        str(tmp_path / "r50.safetensors"),
    )
    (tmp_path / "bad.pt").write_bytes(pickle.dumps({"fc.weight": print}))
    cases = [
        (["--param", "arch=resnet152"], "is not an architecture"),
        (
            ["--param", "arch=resnet18", "--param", f"pretrained={tmp_path / 'r50.safetensors'}"],
            "does not match resnet18: ",
        ),
        (
            ["--param", "arch=resnet18", "--param", f"pretrained={tmp_path / 'bad.pt'}"],
            "not a weights-only file",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["run", "training", *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
    assert not (home / "artifacts").exists(), "a pipeline ran"
