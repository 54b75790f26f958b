"""Noisy labels never promote a truly worse model: twenty seeded retrainings on random
feedback labels, with real models, through the real gate.

The issue's setup, scaled to digits: a champion trained on clean data; production traffic
whose feedback labels are random (about 10% agree with the truth); each challenger is
trained on the champion's data plus 70% of that traffic, and the gate compares both on
the other 30% (the "recent labelled data") and on the champion's held-out guardrail rows.
The truth is a clean set neither model saw. Before the statistical gate, a challenger
ahead by one noisy row was promoted, however much worse it truly was.
"""

import numpy as np
import pandas as pd
import pytest

from loopline.core.settings import GateSettings
from loopline.ml.dataset import LABEL, Split, read_schema, read_split, write_dataset
from loopline.ml.evaluation import predict
from loopline.ml.gate import Rows, decide
from loopline.ml.training_loop import BEST, LocalSession, TrainConfig, fit
from loopline.ml.weights import load_model

pytestmark = pytest.mark.slow

SEEDS = range(20)
CONFIG = dict(arch="mlp", patience=100, augment=False)


def trained(folder, dataset, seed: int, epochs: int = 8):
    session = LocalSession(folder)
    fit(TrainConfig(seed=seed, epochs=epochs, **CONFIG), dataset, session)
    checkpoint = session.latest_checkpoint()
    model_dir = folder / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes((checkpoint / BEST).read_bytes())
    spec = TrainConfig(**CONFIG).spec_for(read_schema(dataset))
    (model_dir / "architecture.json").write_text(spec.to_json())
    return load_model(model_dir)[0]


def test_twenty_noisy_retrainings_never_promote_a_truly_worse_model(digits_dir, tmp_path):
    schema = read_schema(digits_dir)
    train, val, test = (read_split(digits_dir, s, schema) for s in ("train", "val", "test"))
    own, truth = Split(train.x[:900], train.y[:900]), Split(train.x[900:], train.y[900:])
    champion_data = tmp_path / "champion-data"
    write_dataset(champion_data, schema, {"train": own, "val": val, "test": test})
    champion = trained(tmp_path / "champion", champion_data, seed=0, epochs=40)
    champion_truth = float(np.mean(predict(champion, truth.x) == truth.y))
    assert champion_truth > 0.9

    decisions = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        noisy = rng.integers(0, 10, len(val.y))  # random feedback: ~10% agree with the truth
        order = rng.permutation(len(val.y))
        cut = int(len(order) * 0.7)
        learn, recent = order[:cut], order[cut:]
        data = tmp_path / f"retraining-{seed}"
        write_dataset(
            data,
            schema,
            {
                "train": Split(
                    np.vstack([own.x, val.x[learn]]), np.concatenate([own.y, noisy[learn]])
                ),
                "val": Split(val.x[learn], noisy[learn]),
                "test": Split(val.x[recent], noisy[recent]),
            },
        )
        challenger = trained(tmp_path / f"challenger-{seed}", data, seed=seed)
        decision = decide(
            GateSettings(),
            challenger_score=0.0,
            evidence=Rows(
                noisy[recent], predict(challenger, val.x[recent]), predict(champion, val.x[recent])
            ),
            guardrail=Rows(test.y, predict(challenger, test.x), predict(champion, test.x)),
            champion_version="1",
            num_classes=10,
        )
        challenger_truth = float(np.mean(predict(challenger, truth.x) == truth.y))
        decisions.append((seed, decision.promote, challenger_truth, decision.reasons[0]))

    frame = pd.DataFrame(decisions, columns=["seed", "promoted", "truth", "reason"])
    promoted_worse = frame[frame.promoted & (frame.truth < champion_truth)]
    assert promoted_worse.empty, (champion_truth, promoted_worse.to_dict("records"))
    # The noise is real: some challengers are truly worse, and none was promoted on it.
    assert (frame.truth < champion_truth).any(), frame.truth.tolist()
    refused = frame[~frame.promoted]
    assert len(refused) >= 18 and refused.reason.str.contains("not significantly better").all()
    assert LABEL == "label"  # the dataset format the retraining wrote
