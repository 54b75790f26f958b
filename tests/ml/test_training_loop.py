"""The training loop in-process (LocalSession): reproducible, resumable, early-stopping."""

import json

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
    session = LocalSession(tmp_path / "run")
    state = fit(TrainConfig(epochs=30, lr=0.05, patience=2, augment=False), digits_dir, session)
    assert state.stopped_early and state.epoch < 30
    assert state.best_epoch == min(range(state.epoch), key=lambda e: state.history[e]["val_loss"])
    best_epoch_weights = load_file(
        str(session.folder / f"checkpoint_{state.best_epoch:06d}" / CURRENT)
    )
    final = session.latest_checkpoint()
    for key, value in load_file(str(final / BEST)).items():
        assert torch.equal(value, best_epoch_weights[key])
    assert json.loads((final / "state.json").read_text())["bad_epochs"] == 2


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
