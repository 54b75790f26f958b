"""Pretrained backbones and transfer learning, with no downloads: a ResNet-18 trained on
digits 0–4 and registered becomes the pretrained weights for digits 5–9 with 20 samples
per class, and must beat the same network trained from scratch on those 20."""

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from loopline.core.settings import load_settings
from loopline.ml.dataset import DatasetSchema, Split, write_dataset
from loopline.ml.model_spec import ModelSpec
from loopline.ml.models import build_model
from loopline.ml.steps import train_step
from loopline.ml.train_config import TrainConfig
from loopline.ml.transfer import PretrainedError, frozen_stages, preflight
from loopline.ml.weights import load_model
from loopline.storage.registry import Registry

BACKBONE = {
    "arch": "resnet18",
    "input_size": 16,
    "augment": False,
    "batch_size": 32,
    "patience": 100,
}


def digits(folder, classes, *, train_per_class=None, seed=0):
    """A dataset of some digit classes (relabelled 0..k-1): train, val and test splits."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    splits = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for label, digit in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(y == digit))
        n_train = train_per_class or int(len(rows) * 0.7)
        parts = {
            "train": rows[:n_train],
            "val": rows[n_train : n_train + 20],
            "test": rows[n_train + 20 :],
        }
        for name, picked in parts.items():
            splits[name][0].append(x[picked])
            splits[name][1].append(np.full(len(picked), label))
    built = {
        k: Split(np.concatenate(a).astype(np.float32), np.concatenate(b).astype(np.int64))
        for k, (a, b) in splits.items()
    }
    schema = DatasetSchema(
        name=f"digits-{''.join(map(str, classes))}",
        kind="image",
        features=[f"px{i}" for i in range(64)],
        classes=[str(c) for c in classes],
        input_shape=[1, 8, 8],
        value_range=[0.0, 16.0],
        rows={k: len(v.y) for k, v in built.items()},
    )
    write_dataset(folder, schema, built)
    return folder


def accuracy(model_dir, dataset) -> float:
    import pandas as pd

    model, _ = load_model(model_dir)
    test = pd.read_parquet(dataset / "test.parquet")
    x = torch.from_numpy(test.drop(columns="label").to_numpy(np.float32))
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    return float((predicted == test["label"].to_numpy()).mean())


def train(tmp_path, dataset, name, **config):
    settings = load_settings()
    out = tmp_path / name
    summary = train_step(
        dataset,
        out,
        TrainConfig(**{**BACKBONE, **config}),
        run_id=name,
        workers=0,
        model_name=name,
        settings=settings,
    )
    return out, summary


@pytest.mark.slow
def test_a_registered_backbone_transfers_to_new_classes_better_than_scratch(tmp_path, home):
    source = digits(tmp_path / "zero-to-four", [0, 1, 2, 3, 4])
    # 3 epochs of pretraining: measured here, the fine-tuned network scores 0.901 after 3
    # and 0.907 after 10 (from scratch: 0.764); the test takes 42 s instead of 72 s.
    _, pre = train(tmp_path, source, "pretrain", epochs=3)
    registry = Registry(load_settings())
    version = registry.create_version(
        "digits-backbone", source=pre["model_uri"], run_id=pre["mlflow_run_id"], tags={}
    )
    target = digits(tmp_path / "five-to-nine", [5, 6, 7, 8, 9], train_per_class=20)
    reference = f"models:/digits-backbone/{version.version}"
    tuned_dir, _ = train(tmp_path, target, "tuned", epochs=12, pretrained=reference)
    scratch_dir, _ = train(tmp_path, target, "scratch", epochs=12)
    tuned_acc, scratch_acc = accuracy(tuned_dir, target), accuracy(scratch_dir, target)
    print(f"transfer: fine-tuned {tuned_acc:.3f}, from scratch {scratch_acc:.3f}")
    assert tuned_acc >= scratch_acc + MARGIN, (tuned_acc, scratch_acc)
    lineage = json.loads((tuned_dir / "lineage.json").read_text())
    assert lineage["inputs"]["pretrained"].startswith(f"{reference} sha256:")
    spec = json.loads((tuned_dir / "architecture.json").read_text())
    assert spec["normalization"]["mean"] == [0.485, 0.456, 0.406] and spec["input_size"] == 16


# Measured first (benchmarks/README.md, "Transfer learning"): fine-tuned 0.865, from
# scratch 0.731 on the same 20 per class (pretrained on 0–4 to 0.98). The test asks for
# 0.08 of that 0.134 gap.
MARGIN = 0.08


def save_backbone(path, arch="resnet18", classes=7):
    from safetensors.torch import save_file

    model = build_model(ModelSpec(arch=arch, input_shape=[3, 32, 32], num_classes=classes))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def test_weights_of_another_architecture_are_refused_naming_layers_and_shapes(tmp_path):
    save_backbone(tmp_path / "r50.safetensors", arch="resnet50")
    with pytest.raises(
        PretrainedError,
        match=r"does not match resnet18: .*layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\), resnet18 \(64, 64, 3, 3\)",
    ):
        preflight({"arch": "resnet18", "pretrained": str(tmp_path / "r50.safetensors")})


def test_a_head_of_any_size_is_replaced_and_a_torch_state_dict_loads(tmp_path):
    model = save_backbone(tmp_path / "any.safetensors", classes=1000)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    assert preflight({"arch": "resnet18", "pretrained": str(tmp_path / "any.safetensors")})
    assert preflight({"arch": "resnet18", "pretrained": str(tmp_path / "weights.pt")})


class Payload:
    def __reduce__(self):  # what a hostile checkpoint does when unpickled
        return (print, ("unpickled: code ran",))


def test_a_pickle_that_is_not_weights_only_is_refused_and_never_run(tmp_path, capsys):
    path = tmp_path / "hostile.pt"
    path.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(PretrainedError, match="not a weights-only file"):
        preflight({"arch": "resnet18", "pretrained": str(path)})
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"arch": "resnet152"}, "arch='resnet152' is not an architecture"),
        ({"arch": "resnet18", "freeze": "until:layer9"}, "freeze='until:layer9' is not"),
        ({"arch": "cnn", "pretrained": "x.safetensors"}, "need a backbone architecture"),
        ({"arch": "resnet18", "pretrained": "/nowhere/w.safetensors"}, "no such file"),
        ({"arch": "resnet18", "pretrained": "models:/nothing"}, "use models:/NAME/VERSION"),
    ],
)
def test_bad_transfer_parameters_are_refused_up_front(arguments, message, tmp_path, home):
    with pytest.raises(PretrainedError, match=message):
        preflight(arguments)


def test_a_frozen_backbone_keeps_its_weights_and_the_new_head_learns(tmp_path):
    from safetensors.torch import load_file

    from loopline.ml.training_loop import BEST, LocalSession, fit

    data = digits(tmp_path / "data", [5, 6, 7], train_per_class=10)
    save_backbone(tmp_path / "w.safetensors", classes=9)
    before = load_file(str(tmp_path / "w.safetensors"))
    config = TrainConfig(
        **{
            **BACKBONE,
            "epochs": 2,
            "freeze": "backbone",
            "pretrained": str(tmp_path / "w.safetensors"),
        }
    )
    fit(config, data, LocalSession(tmp_path / "run"))
    after = load_file(str(sorted((tmp_path / "run").glob("checkpoint_*"))[-1] / BEST))
    body = [k for k in before if not k.startswith("fc.")]
    assert all(torch.equal(before[k], after[k]) for k in body)  # BN statistics included
    assert after["fc.weight"].shape == (3, 512)  # a new head for the 3 classes


def test_after_the_probe_epochs_the_backbone_learns_too(tmp_path):
    from safetensors.torch import load_file

    from loopline.ml.training_loop import CURRENT, LocalSession, fit

    data = digits(tmp_path / "data", [5, 6, 7], train_per_class=10)
    save_backbone(tmp_path / "w.safetensors")
    before = load_file(str(tmp_path / "w.safetensors"))
    config = TrainConfig(
        **{
            **BACKBONE,
            "epochs": 2,
            "probe_epochs": 1,
            "checkpoint_seconds": 0,  # a checkpoint per epoch: the probe's, then the tuned
            "pretrained": str(tmp_path / "w.safetensors"),
        }
    )
    fit(config, data, LocalSession(tmp_path / "run"))
    first, second = sorted((tmp_path / "run").glob("checkpoint_*"))
    probed, tuned = load_file(str(first / CURRENT)), load_file(str(second / CURRENT))
    assert torch.equal(probed["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])
    assert not torch.equal(tuned["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])


def test_freeze_rules_freeze_stages_in_order():
    assert frozen_stages("none") == ()
    assert frozen_stages("until:layer2") == ("conv1", "bn1", "layer1", "layer2")
    assert frozen_stages("backbone")[-1] == "layer4"


def test_a_pretrained_file_is_hashed_in_blocks_and_only_a_regular_file_of_bounded_size():
    """/dev/zero once grew without bound; a 4 GiB file peaked at 4.5 GB of memory."""
    import hashlib
    import tempfile
    from pathlib import Path

    from loopline.ml.transfer import MAX_WEIGHTS, PretrainedError, resolve

    with pytest.raises(PretrainedError, match="not a regular file"):
        resolve("/dev/zero")
    with tempfile.TemporaryDirectory() as tmp:
        huge = Path(tmp) / "huge.safetensors"
        with open(huge, "wb") as handle:
            handle.truncate(MAX_WEIGHTS + 1)  # sparse: no disk, no memory
        with pytest.raises(PretrainedError, match="over the 4 GiB"):
            resolve(str(huge))
        small = Path(tmp) / "small.safetensors"
        small.write_bytes(b"x" * 3_000_000)  # more than one block
        assert resolve(str(small)).digest == hashlib.sha256(small.read_bytes()).hexdigest()
