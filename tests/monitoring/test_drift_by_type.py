"""Drift by column type: categories by a categorical test, text through its descriptors,
a regressor's answers by a numeric test; and the same data shows no drift."""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopline.monitoring.drift import add_text_descriptors, detect_drift

WORDS = [
    "invoice",
    "refund",
    "payment",
    "card",
    "app",
    "login",
    "crash",
    "parcel",
    "courier",
    "late",
]
NEW = ["router", "wifi", "firmware", "antenna", "modem", "mesh"]


def table(rows: int, seed: int, *, shifted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["n", "s", "e", "w"], rows, p=[0.7, 0.1, 0.1, 0.1] if shifted else None)
    vocabulary = WORDS + NEW if shifted else WORDS
    text = [" ".join(rng.choice(vocabulary, rng.integers(4, 9))) for _ in range(rows)]
    return pd.DataFrame(
        {
            "amount": rng.normal(0, 1, rows),
            "region": region,
            "text": text,
            "prediction": rng.normal(3 if shifted else 0, 1, rows),
        }
    )


def judge(reference, current):
    return detect_drift(
        reference,
        current,
        ["amount"],
        categorical=["region"],
        text=["text"],
        numeric_prediction=True,
        drift_share=0.5,
        max_rows=5000,
    )


def test_each_type_drifts_where_it_moved_and_nowhere_else():
    reference = table(1000, 0)
    same = judge(reference, table(600, 1))
    assert same.drifted_columns == [] and not same.prediction["drifted"]
    moved = judge(reference, table(600, 2, shifted=True))
    assert set(moved.drifted_columns) >= {"region", "text.oov_share"}
    assert "amount" not in moved.drifted_columns
    assert moved.columns["region"]["method"] != moved.columns["amount"]["method"]
    assert moved.prediction["drifted"] and "K-S" in moved.prediction["method"]
    # Real Evidently: within each method, every drifted column ranks above every undrifted
    # one by its drift degree (higher: more drift), though K-S gives p-values.
    for method in {c["method"] for c in moved.columns.values()}:
        judged = [c for c in moved.columns.values() if c["method"] == method]
        drifted = [c["drift"] for c in judged if c["drifted"]]
        calm = [c["drift"] for c in judged if not c["drifted"]]
        assert not drifted or not calm or min(drifted) > max(calm), moved.columns
    assert moved.columns["text.oov_share"]["drift"] > moved.columns["amount"]["drift"]


def test_out_of_vocabulary_share_counts_words_the_reference_never_used():
    reference = pd.DataFrame({"t": ["a b c", "b c"]})
    current = pd.DataFrame({"t": ["a z", "", "Q q"]})
    names = add_text_descriptors(reference, current, "t")
    assert names == ["t.length", "t.words", "t.oov_share"]
    assert current["t.oov_share"].tolist() == [0.5, 0.0, 1.0]
    assert current["t.words"].tolist() == [2.0, 0.0, 2.0]
    assert reference["t.oov_share"].tolist() == [0.0, 0.0]
