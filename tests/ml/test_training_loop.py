"""The training loop in-process (LocalSession): reproducible, resumable, early-stopping."""

import dataclasses
import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from loopline.ml.training_loop import BEST, CURRENT, LocalSession, TrainConfig, fit


def weights(folder):
    return load_file(str(folder / BEST))


def test_same_seed_same_weights(digits_dir, tmp_path):
    config = TrainConfig(epochs=2, seed=7)
    a = fit(config, digits_dir, LocalSession(tmp_path / "a"))
    b = fit(config, digits_dir, LocalSession(tmp_path / "b"))
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]
    for key, value in weights(LocalSession(tmp_path / "a").latest_checkpoint()).items():
        assert torch.equal(value, weights(LocalSession(tmp_path / "b").latest_checkpoint())[key])


def test_resumed_run_matches_an_uninterrupted_one(digits_dir, tmp_path):
    whole = LocalSession(tmp_path / "whole")
    fit(TrainConfig(epochs=4, patience=10), digits_dir, whole)
    split = LocalSession(tmp_path / "split")
    fit(TrainConfig(epochs=2, patience=10), digits_dir, split)  # "killed" after epoch 2
    state = fit(TrainConfig(epochs=4, patience=10), digits_dir, split)
    assert state.resumed_from_epoch == 2
    assert [h["epoch"] for h in state.history] == [0, 1, 2, 3]
    final_whole, final_split = whole.latest_checkpoint(), split.latest_checkpoint()
    for key, value in load_file(str(final_whole / CURRENT)).items():
        torch.testing.assert_close(load_file(str(final_split / CURRENT))[key], value)


def test_early_stopping_restores_the_best_weights(digits_dir, tmp_path):
    # A learning rate this high makes the validation loss bounce, so patience runs out.
    config = TrainConfig(epochs=30, lr=0.05, patience=2, augment=False)
    session = LocalSession(tmp_path / "run")
    state = fit(config, digits_dir, session)
    assert state.stopped_early and state.epoch < 30
    assert state.best_epoch == min(range(state.epoch), key=lambda e: state.history[e]["val_loss"])
    final = session.latest_checkpoint()
    assert json.loads((final / "state.json").read_text())["bad_epochs"] == 2
    # The same run stopped after its best epoch ends with the weights kept as best.
    until_best = LocalSession(tmp_path / "until-best")
    fit(dataclasses.replace(config, epochs=state.best_epoch + 1), digits_dir, until_best)
    best_epoch_weights = load_file(str(until_best.latest_checkpoint() / CURRENT))
    for key, value in load_file(str(final / BEST)).items():
        assert torch.equal(value, best_epoch_weights[key])


class Recorded(LocalSession):
    """A LocalSession that notes, per epoch, whether a checkpoint was written."""

    def __init__(self, folder):
        super().__init__(folder)
        self.written = []

    def report(self, metrics, write):
        self.written.append(write is not None)
        super().report(metrics, write)


def test_checkpoints_are_spaced_in_time_and_the_final_epoch_always_writes_one(digits_dir, tmp_path):
    config = TrainConfig(epochs=6, patience=10, augment=False, checkpoint_seconds=3600)
    spaced = Recorded(tmp_path / "spaced")
    fit(config, digits_dir, spaced)
    assert spaced.written == [False] * 5 + [True]
    every = Recorded(tmp_path / "every")
    fit(dataclasses.replace(config, checkpoint_seconds=0), digits_dir, every)
    assert every.written == [True] * 6
    # Older checkpoints are removed as newer ones land: the last two stay.
    assert [p.name for p in sorted(every.folder.glob("checkpoint_*"))] == [
        "checkpoint_000004",
        "checkpoint_000005",
    ]
    assert every.latest_checkpoint().name == spaced.latest_checkpoint().name


KILLED = """
import sys
from pathlib import Path
from loopline.ml.training_loop import LocalSession, TrainConfig, fit
config = TrainConfig(epochs=100000, patience=100000, augment=False, checkpoint_seconds=1)
fit(config, Path(sys.argv[1]), LocalSession(Path(sys.argv[2])))
"""


def test_a_run_killed_between_its_spaced_checkpoints_resumes_from_the_last(digits_dir, tmp_path):
    """kill -9 mid-training costs at most the interval: checkpoints land while it runs,
    not only at its end."""
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(digits_dir), str(folder)])
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("checkpoint_*"))) < 2:  # two: written during the run
            assert child.poll() is None, "the training ended early"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait()
    latest = LocalSession(folder).latest_checkpoint()
    epoch = json.loads((latest / "state.json").read_text())["epoch"]
    assert epoch >= 2
    config = TrainConfig(epochs=epoch + 1, patience=100000, augment=False)
    state = fit(config, digits_dir, LocalSession(folder))
    assert state.resumed_from_epoch == epoch and state.epoch == epoch + 1


def test_bad_config_names_every_problem():
    with pytest.raises(ValueError) as info:
        TrainConfig(epochs=0, dropout=1.5, lr=-1)
    assert "epochs must be positive" in str(info.value)
    assert "dropout must be in [0, 1)" in str(info.value)
    assert "lr must be positive" in str(info.value)


def test_a_checkpoint_unpickles_nothing_and_a_torn_one_is_never_the_latest(digits_dir, tmp_path):
    session = LocalSession(tmp_path / "run")
    fit(TrainConfig(epochs=2, patience=10), digits_dir, session)
    latest = session.latest_checkpoint()
    assert latest.name == "checkpoint_000001"
    assert {p.suffix for p in latest.iterdir()} == {".safetensors", ".json"}
    # A run killed while writing epoch 2 left its folder half-written: resuming skips it.
    torn = session.folder / ".partial-checkpoint_000002"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 10)
    assert session.latest_checkpoint() == latest
    state = fit(TrainConfig(epochs=3, patience=10), digits_dir, session)
    assert state.resumed_from_epoch == 2 and session.latest_checkpoint().name == "checkpoint_000002"
    assert not torn.exists()  # written afresh, then renamed


class DiskFull(LocalSession):
    """A LocalSession whose checkpoint write fails at ``epoch``, as on a full disk."""

    def __init__(self, folder, epoch: int):
        super().__init__(folder)
        self.epoch = epoch

    def report(self, metrics, write):
        if metrics["epoch"] == self.epoch:
            raise OSError(28, "No space left on device")
        super().report(metrics, write)


def test_metrics_held_back_reach_mlflow_when_the_training_fails(
    settings, digits_dir, tmp_path, monkeypatch, caplog
):
    """The throttle holds metrics back (up to 2 s of them); a training that fails sends
    them on its way out, and a tracking store that refuses them then hides not its error."""
    from mlflow import MlflowClient

    from loopline.ml import training_loop
    from loopline.storage.registry import Registry

    monkeypatch.setattr(training_loop, "METRICS_EVERY_S", 3600)  # only a checkpoint sends
    config = TrainConfig(epochs=10, patience=100, augment=False, checkpoint_seconds=3600)
    registry = Registry(settings)
    tracked = {"tracking_uri": settings.tracking_uri}
    run = registry.start_run("crashing", params={}, tags={})
    with pytest.raises(OSError, match="No space left"):
        fit(config, digits_dir, DiskFull(tmp_path / "a", 3), mlflow_run_id=run, **tracked)
    client = MlflowClient(settings.tracking_uri)
    assert [m.step for m in client.get_metric_history(run, "val_loss")] == [0, 1, 2]

    deleted = registry.start_run("crashing", params={}, tags={})
    client.delete_run(deleted)  # MLflow refuses metrics of a deleted run
    with pytest.raises(OSError, match="No space left"):
        fit(config, digits_dir, DiskFull(tmp_path / "b", 2), mlflow_run_id=deleted, **tracked)
    assert "10 metric values not sent to MLflow" in caplog.text  # 2 epochs of 5


def test_a_resumed_optimizer_steps_as_this_run_chose_not_as_its_checkpoint(digits_dir, tmp_path):
    """A checkpoint keeps the kernel flags of the device it was written on (fused Adam on
    CPU and CUDA, not on other devices nor before the fused kernel); a resumed run steps
    with its own, and finds Adam's step counts where its kernel wants them."""
    from loopline.ml.dataset import read_schema
    from loopline.ml.models import build_model
    from loopline.ml.training_loop import OPTIMIZER_GROUPS, _load_optimizer

    config = TrainConfig(epochs=1, patience=10, augment=False)
    session = LocalSession(tmp_path / "run")
    fit(config, digits_dir, session)
    checkpoint = session.latest_checkpoint()
    written = json.loads((checkpoint / OPTIMIZER_GROUPS).read_text())
    assert written["param_groups"][0]["fused"] is True  # a CPU run's fused kernel

    model = build_model(config.spec_for(read_schema(digits_dir)))
    elsewhere = torch.optim.Adam(model.parameters(), fused=False)  # fit's choice on MPS
    _load_optimizer(elsewhere, checkpoint)
    assert [g["fused"] for g in elsewhere.param_groups] == [False]

    # A checkpoint of an unfused run (another device, an earlier release) resumed on CPU.
    written["param_groups"][0]["fused"] = None
    (checkpoint / OPTIMIZER_GROUPS).write_text(json.dumps(written))
    here = torch.optim.Adam(model.parameters(), fused=True)
    _load_optimizer(here, checkpoint)
    assert [g["fused"] for g in here.param_groups] == [True]
    assert {s["step"].dtype for s in here.state.values()} == {torch.float32}
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    here.step()  # the fused kernel, on the state it resumed
