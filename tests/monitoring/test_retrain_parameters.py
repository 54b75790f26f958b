"""What a retraining is started with: the champion's recorded hyper-parameters (a
fine-tuned ResNet retrains as that ResNet), with the policy's over them. At the level of
the run's arguments: real ResNet training is too slow for the suite."""

import pytest

from loopline.core import lineage
from loopline.core.settings import load_settings
from loopline.monitoring import retrain
from loopline.monitoring.policy import PolicyError, parse_policy
from loopline.storage.checks import Trigger
from loopline.storage.registry import VersionInfo

TRIGGER = Trigger(
    7, "pets-classifier", "2", 101, ["data drift: 80%"], "drift.html", "running", 0.0, 0.0, None
)
# What train_step records for `loopline run training --arch resnet18 --param pretrained=...`
RESNET = {
    "arch": "resnet18",
    "epochs": 12,
    "batch_size": 32,
    "lr": 0.0003,
    "weight_decay": 0.0001,
    "dropout": 0.2,
    "hidden": 128,
    "augment": True,
    "patience": 5,
    "seed": 3,
    "amp": True,
    "pretrained": "models:/resnet-imagenet/1",
    "freeze": "until:layer3",
    "probe_epochs": 2,
    "backbone_lr_scale": 0.1,
    "input_size": 160,
    "stream": "auto",
    "memory_mb": 2048,
    "workers": 2,
    "pretrained_digest": "ab12",
}


@pytest.fixture
def started(tmp_path, monkeypatch):
    """The arguments each in-process retraining was started with; the champion v2's
    registered folder records RESNET."""
    folder = tmp_path / "v2"
    folder.mkdir()
    lineage.record(folder, run_id="r-1", step="train", inputs={}, parameters=RESNET)

    class Registry:
        def version(self, name, version):
            assert (name, version) == ("pets-classifier", "2")
            return VersionInfo(name, version, f"file://{folder}", "mlflow-run", {})

    monkeypatch.setattr(retrain, "reader", lambda settings: Registry())
    runs = []

    def run_pipeline(source, arguments, settings, **kw):
        runs.append(arguments)
        raise RuntimeError("not run here")

    monkeypatch.setattr(retrain, "run_pipeline", run_pipeline)
    return runs


def test_a_resnet_champion_is_retrained_as_that_resnet(started, tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    with pytest.raises(RuntimeError, match="not run here"):
        retrain.start_retraining(settings, TRIGGER, engine="inprocess", epochs=20)
    [arguments] = started
    assert arguments["arch"] == "resnet18"  # not auto, which picks a CNN for images
    assert arguments["pretrained"] == "models:/resnet-imagenet/1"
    assert arguments["freeze"] == "until:layer3" and arguments["input_size"] == 160
    assert arguments["probe_epochs"] == 2 and arguments["backbone_lr_scale"] == 0.1
    assert arguments["lr"] == 0.0003 and arguments["batch_size"] == 32
    assert arguments["epochs"] == 20  # the policy's retrain_epochs
    # How the retraining runs stays the retraining pipeline's own; records are no parameters.
    assert not {"augment", "workers", "memory_mb", "pretrained_digest"} & set(arguments)
    assert arguments["model_name"] == "pets-classifier" and arguments["since"] == 100


def test_the_policy_overrides_the_champions_parameters(started, tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path)})
    policy = parse_policy({"retrain_parameters": {"lr": 0.0001, "epochs": 4}})
    with pytest.raises(RuntimeError):
        retrain.start_retraining(
            settings, TRIGGER, engine="inprocess", epochs=20, parameters=policy.retrain_parameters
        )
    [arguments] = started
    assert arguments["lr"] == 0.0001 and arguments["epochs"] == 4
    assert arguments["arch"] == "resnet18"
    with pytest.raises(PolicyError, match="learning_rate.*known: amp, arch"):
        parse_policy({"retrain_parameters": {"learning_rate": 0.1}})


def test_a_registered_champions_record_is_what_its_retraining_reads(settings, digits_dir, tmp_path):
    """Not a stand-in: the lineage a real registration keeps, read back by version."""
    from loopline.ml.train_config import TrainConfig
    from tests.conftest import train_and_register

    config = TrainConfig(epochs=1, hidden=48, dropout=0.3, lr=0.002)
    assert train_and_register(settings, digits_dir, tmp_path / "v1", config)["promoted"]
    recorded = retrain.champion_hyperparameters(settings, settings.model_name, "1")
    assert recorded["arch"] == "cnn"  # auto, resolved for images when it trained
    assert (recorded["hidden"], recorded["dropout"], recorded["lr"]) == (48, 0.3, 0.002)
    assert "workers" not in recorded and "augment" not in recorded
