"""Simple baselines beside every evaluated model, scored on the same test rows.

A model that does not beat a majority-class guess, or a linear model on the same
features, is not worth its training: the evaluation report shows the baselines next to
the model, and the run summary says when the model does not beat the best of them.

- ``majority class``: always the most frequent class of the train split.
- ``logistic regression`` (tabular data) or ``linear model on pixels`` (small images):
  scikit-learn's standardised logistic regression, fitted on the train split. Data too
  wide (more than :data:`MAX_FEATURES` columns: a backbone's 224x224 images) is left out,
  with the reason; a train split longer than :data:`MAX_TRAIN_ROWS` is sampled.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from loopline.ml.dataset import DatasetSchema, Split

MAX_FEATURES = 4096  # 64x64 grey pixels; wider images are a backbone's business
MAX_TRAIN_ROWS = 10_000  # the linear baseline's train sample: seconds, not minutes


@dataclass
class Baseline:
    name: str
    scores: dict[str, float]  # accuracy, macro_f1: the headline metrics that it shares
    seconds: float
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def linear_name(schema: DatasetSchema) -> str:
    return "linear model on pixels" if schema.kind == "image" else "logistic regression"


def baselines(
    schema: DatasetSchema, train: Split, test: Split, *, seed: int = 0
) -> tuple[list[Baseline], list[str]]:
    """The baselines' scores on ``test``, and why any baseline was left out."""
    from loopline.ml.evaluation import scores

    found, skipped = [], []
    started = time.perf_counter()
    labelled = train.y[train.y >= 0]
    majority = int(np.bincount(labelled, minlength=schema.num_classes).argmax())
    guess = np.full(len(test.y), majority)
    found.append(
        Baseline(
            "majority class",
            scores(test.y, guess, schema.classes).headline(),
            round(time.perf_counter() - started, 3),
            f"always {schema.classes[majority]}",
        )
    )
    name = linear_name(schema)
    if train.x.shape[1] > MAX_FEATURES:
        skipped.append(f"{name}: {train.x.shape[1]} features, more than {MAX_FEATURES}")
        return found, skipped
    if len(np.unique(labelled)) < 2:
        skipped.append(f"{name}: the train split holds one class")
        return found, skipped
    started = time.perf_counter()
    predicted, note = _linear(train, test, seed)
    found.append(
        Baseline(
            name,
            scores(test.y, predicted, schema.classes).headline(),
            round(time.perf_counter() - started, 3),
            note,
        )
    )
    return found, skipped


def _linear(train: Split, test: Split, seed: int) -> tuple[np.ndarray, str]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = np.flatnonzero(train.y >= 0)
    note = f"fitted on {len(rows)} train rows"
    if len(rows) > MAX_TRAIN_ROWS:
        note = f"fitted on {MAX_TRAIN_ROWS} of {len(rows)} train rows"
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_TRAIN_ROWS, replace=False))
    # The sample's rows are copied once, however large the split (it may fill the budget).
    x, y = np.nan_to_num(train.x[rows], copy=False), train.y[rows]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    with warnings.catch_warnings():  # a linear baseline that has not converged still counts
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model.predict(np.nan_to_num(test.x)), note


def verdict(model: dict[str, float], found: list[Baseline], metric: str) -> dict:
    """Whether the model beats every baseline on ``metric`` (the gate's), and the best one."""
    best = max(found, key=lambda b: b.scores[metric])
    beaten = model[metric] > best.scores[metric]
    summary = (
        f"the model's {metric} {model[metric]:.4f} beats every baseline (best: {best.name}, "
        f"{best.scores[metric]:.4f})"
        if beaten
        else f"the model's {metric} {model[metric]:.4f} does not beat the {best.name} "
        f"baseline ({best.scores[metric]:.4f}) on the same test rows"
    )
    return {"metric": metric, "beaten": beaten, "best": best.name, "summary": summary}
