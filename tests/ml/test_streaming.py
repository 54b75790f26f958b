"""Training data larger than memory: splits streamed from Parquet, sharded per worker."""

import json
import subprocess
import sys

import numpy as np
import pytest

from loopline.ml.dataset import DatasetSchema, Split, write_dataset
from loopline.ml.streaming import TrainStream

FEATURES = 64


def dataset(folder, rows, *, seed=0, ids=False):
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in (("train", rows), ("val", max(rows // 10, 10)), ("test", 10)):
        x = rng.normal(size=(n, FEATURES)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)  # learnable: two features decide
        if ids and name == "train":
            x[:, -1] = np.arange(n)  # a row id, to check coverage
        splits[name] = Split(x, y)
    schema = DatasetSchema(
        name="synthetic",
        kind="tabular",
        features=[f"f{i}" for i in range(FEATURES)],
        classes=["0", "1"],
        input_shape=[FEATURES],
        feature_mean=[0.0] * FEATURES,
        feature_std=[1.0] * FEATURES,
        rows={k: len(v.y) for k, v in splits.items()},
    )
    write_dataset(folder, schema, splits)
    return folder, schema


def ids(stream):
    return [int(v) for x, _ in stream for v in x[:, -1]]


def test_each_worker_gets_its_own_rows_and_the_same_number_of_batches(tmp_path):
    folder, schema = dataset(tmp_path, 70_001, ids=True)  # several row groups, an uneven tail
    ranks = [TrainStream(folder, schema, 256, rank=r, world=3, seed=1) for r in range(3)]
    seen = [ids(r) for r in ranks]
    assert len({len(list(iter(r))) for r in ranks}) == 1  # DDP needs equal steps
    flat = [i for s in seen for i in s]
    assert len(flat) == len(set(flat)), "a row went to two workers in one epoch"
    assert len(flat) > 70_001 - 3 * 4096  # ranks differ by a chunk at most: that is left out
    alone = TrainStream(folder, schema, 256, rank=0, world=1, seed=1)
    assert sorted(ids(alone)) == list(range(70_001))  # one worker: every row, once
    first = ids(alone)
    alone.set_epoch(1)
    assert ids(alone) != first, "the order must change from epoch to epoch"


TRAIN = """
import json, sys
from pathlib import Path
from loopline.ml.training_loop import LocalSession, TrainConfig, fit
config = TrainConfig(arch="tabular_mlp", epochs=1, batch_size=512, stream=sys.argv[2],
                     memory_mb=int(sys.argv[3]), patience=5)
state = fit(config, Path(sys.argv[1]), LocalSession(Path(sys.argv[4])))
# VmHWM: this process's own peak; ru_maxrss would include the parent's RSS at fork
status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
peak = int(status.split()[0]) // 1024
print(json.dumps({"peak_mb": peak, "val_accuracy": state.history[-1]["val_accuracy"]}))
"""


def train(folder, stream, budget_mb, run):
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(folder), stream, str(budget_mb), str(run)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_split_larger_than_the_budget_streams_and_its_memory_does_not_grow(tmp_path):
    rows = 300_000  # 73 MB as float32 features: over the 32 MB budget
    folder, _ = dataset(tmp_path / "data", rows)
    whole = train(folder, "off", 32, tmp_path / "whole")
    streamed = train(folder, "auto", 32, tmp_path / "streamed")  # auto: over budget, streams
    double, _ = dataset(tmp_path / "double", 2 * rows, seed=1)
    streamed_double = train(double, "auto", 32, tmp_path / "streamed-double")
    print(
        f"peak RSS: whole {whole['peak_mb']} MB, streamed {streamed['peak_mb']} MB, "
        f"streamed with twice the rows {streamed_double['peak_mb']} MB"
    )
    assert all(r["val_accuracy"] > 0.9 for r in (whole, streamed, streamed_double))
    data_mb = rows * FEATURES * 4 / 2**20
    assert whole["peak_mb"] - streamed["peak_mb"] > data_mb, (whole, streamed)
    assert abs(streamed_double["peak_mb"] - streamed["peak_mb"]) < 40, (streamed, streamed_double)


def test_streamed_evaluation_and_sampling_match_reading_whole(tmp_path):
    import torch

    from loopline.ml.dataset import read_split
    from loopline.ml.evaluation import evaluate, evaluate_chunks
    from loopline.ml.model_spec import ModelSpec
    from loopline.ml.models import build_model
    from loopline.ml.streaming import chunks, sample_rows

    folder, schema = dataset(tmp_path, 20_000)
    torch.manual_seed(0)
    model = build_model(ModelSpec("tabular_mlp", [FEATURES], 2))
    whole = evaluate(model, read_split(folder, "val", schema), schema.classes)
    streamed = evaluate_chunks(model, chunks(folder, "val", schema, chunk_rows=333), schema.classes)
    assert streamed == whole
    sample = sample_rows(folder, "train", 500, seed=3)
    assert len(sample) == 500 and sample.equals(sample_rows(folder, "train", 500, seed=3))
    assert list(sample.columns) == [*schema.features, "label"]
