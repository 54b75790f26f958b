import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from loopline.core.layout import ERROR
from loopline.ml.sources import SourceError
from loopline.ml.steps import _train_in_process, ingest_step
from loopline.ml.training_loop import BEST, TrainConfig


def test_a_failing_step_leaves_its_error_beside_its_output(tmp_path):
    out = tmp_path / "ingest" / "dataset"
    with pytest.raises(SourceError):
        ingest_step(
            str(tmp_path / "none.csv"), out, run_id="r", label_column="y", image_size=8, seed=0
        )
    message = (tmp_path / "ingest" / ERROR).read_text()
    assert message.startswith("SourceError: ") and "neither a built-in" in message


EPOCHS = 60
CONFIG = TrainConfig(epochs=EPOCHS, patience=10**6, augment=False, checkpoint_seconds=0)
FIRST = f"""
import json, sys
from pathlib import Path
from loopline.ml.steps import _train_in_process
from loopline.ml.train_config import TrainConfig
config = TrainConfig(epochs={EPOCHS}, patience=10**6, augment=False, checkpoint_seconds=0)
dataset, folder, target = (Path(a) for a in sys.argv[1:])
state, _ = _train_in_process(config, dataset, folder, False, {{}}, target=target)
print(json.dumps({{"epoch": state.epoch, "resumed_from_epoch": state.resumed_from_epoch}}))
"""


def test_two_local_trainings_of_one_key_take_turns_and_the_second_resumes(digits_dir, tmp_path):
    """Two same-key trainings share a checkpoint folder. Side by side, each would prune
    the other's checkpoints and resume from one half-way; the second waits for the first
    instead, and resumes from its final checkpoint: the same model, not trained twice."""
    folder = tmp_path / "local-samekey"
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first_out.mkdir()
    second_out.mkdir()
    args = [str(digits_dir), str(folder), str(first_out)]
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list(folder.glob("checkpoint_*")):  # the first is training
            assert first.poll() is None, "the first training ended early"
            assert time.monotonic() < deadline, "the first training wrote no checkpoint"
            time.sleep(0.02)
        second, _ = _train_in_process(CONFIG, digits_dir, folder, False, {}, target=second_out)
        stdout, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    assert first.returncode == 0
    assert json.loads(stdout.splitlines()[-1]) == {"epoch": EPOCHS, "resumed_from_epoch": None}
    assert second.resumed_from_epoch == EPOCHS and second.epoch == EPOCHS
    trained, resumed = load_file(str(first_out / BEST)), load_file(str(second_out / BEST))
    assert all(torch.equal(value, resumed[key]) for key, value in trained.items())
