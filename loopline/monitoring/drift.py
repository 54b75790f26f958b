"""Drift between the reference and a window of production inputs, with Evidently 0.7.

Per-feature data drift (Evidently picks the test by size and type: K-S or Wasserstein
for numbers, chi-square or Jensen-Shannon for classes) and prediction drift (the served
labels against the reference's labels). Windows and references larger than ``max_rows``
are sampled: a drift test's verdict needs a sample, not every row (benchmarks/drift.py
measures the agreement with full-data runs).

Columns are judged by type, as a model's signature names them: numbers by K-S or
Wasserstein, categories (strings) by chi-square or Jensen-Shannon, and free text through
descriptors of each text (its length in characters and words, and the share of its words
the reference never used), each a number judged like any other. A regressor's prediction
drift is a numeric test on its answers; a classifier's, a categorical one on its labels.

The report holds a ``ValueDrift`` per column, each with its test: the per-column part of
``DataDriftPreset``. The preset's overview table draws every column's distribution a
second time (40% of a pass), and its ``DriftedColumnsCount`` runs every column's test a
second time (0.55 s); the drifted share is counted here from the per-column verdicts, and
the report's test summary shows the same count (benchmarks/README.md).

The report runs with one BLAS thread. Wasserstein distances end in a vector product of a
few ten thousand numbers (``np.vecdot``), which OpenBLAS splits over every core; its
threads then spin, waiting for more work, while the report goes on drawing in Python: on
two cores a pass burnt 1.5 times its wall time in CPU, and on a busy machine the spinning
threads took their core from the report itself.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field, fields

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift
from threadpoolctl import threadpool_limits

from loopline.core.layout import PREDICTION


@dataclass
class DriftResult:
    columns: dict[str, dict]  # feature -> score, method, threshold, drifted, drift
    drifted_share: float
    data_drift: bool
    prediction: dict | None  # score, method, threshold, drifted, drift
    rows: dict[str, int]
    snapshot: Snapshot | None = field(default=None, repr=False)

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, c in self.columns.items() if c["drifted"]]

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: it would deep-copy the whole snapshot (0.3 s) to drop it.
        result = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
            if f.name != "snapshot"
        }
        result["drifted_columns"] = self.drifted_columns
        return result


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    *,
    drift_share: float,
    max_rows: int,
    seed: int = 0,
    categorical: list[str] = (),
    text: list[str] = (),
    numeric_prediction: bool = False,
) -> DriftResult:
    """Evidently's verdicts on ``features`` (numbers), ``categorical`` and ``text``
    columns, and on ``prediction`` when both sides have it."""
    rows = {"reference": len(reference), "current": len(current)}
    reference, current = _sample(reference, max_rows, seed), _sample(current, max_rows, seed)
    rows.update(reference_used=len(reference), current_used=len(current))
    numeric, categorical = list(features), list(categorical)
    if text:
        reference, current = reference.copy(), current.copy()
        for column in text:
            numeric += add_text_descriptors(reference, current, column)
    judged = numeric + categorical
    with_prediction = PREDICTION in reference and PREDICTION in current
    prediction = [PREDICTION] if with_prediction else []
    definition = DataDefinition(
        numerical_columns=numeric + (prediction if numeric_prediction else []),
        categorical_columns=categorical + ([] if numeric_prediction else prediction),
    )
    columns = judged + prediction
    metrics = [ValueDrift(column=name) for name in columns]
    as_text = categorical + ([] if numeric_prediction else prediction)
    current_data = Dataset.from_pandas(_typed(current, columns, as_text), definition)
    reference_data = Dataset.from_pandas(_typed(reference, columns, as_text), definition)
    # One BLAS thread: the tests' vector products are small, and OpenBLAS's idle threads
    # spin after each one, taking a core from the report (see the module's docstring).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns divide by zero
        snapshot = Report(metrics, include_tests=True).run(current_data, reference_data)
    verdicts = _column_verdicts(snapshot.dict())
    per_feature = {name: verdicts[name] for name in judged}
    share = sum(c["drifted"] for c in per_feature.values()) / max(len(judged), 1)
    return DriftResult(
        columns=per_feature,
        drifted_share=share,
        data_drift=share >= drift_share,
        prediction=verdicts.get(PREDICTION) if with_prediction else None,
        rows=rows,
        snapshot=snapshot,
    )


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=max_rows, random_state=seed) if len(frame) > max_rows else frame


def _typed(frame: pd.DataFrame, columns: list[str], as_text: list[str]) -> pd.DataFrame:
    typed = frame[columns].copy()
    for name in as_text:
        typed[name] = typed[name].astype(str)
    return typed


WORD = re.compile(r"\w+")


def add_text_descriptors(reference: pd.DataFrame, current: pd.DataFrame, column: str) -> list[str]:
    """Numeric descriptors of a text column on both sides (in place); their names. The
    out-of-vocabulary share is against the reference's own words, so new words show."""
    vocabulary = {w for t in reference[column].astype(str) for w in WORD.findall(t.lower())}
    names = [f"{column}.length", f"{column}.words", f"{column}.oov_share"]
    for frame in (reference, current):
        words = frame[column].astype(str).str.lower().map(WORD.findall)
        frame[names[0]] = frame[column].astype(str).str.len().astype(float)
        frame[names[1]] = words.map(len).astype(float)
        frame[names[2]] = words.map(
            lambda ws: sum(w not in vocabulary for w in ws) / len(ws) if ws else 0.0
        )
    return names


def _column_verdicts(report: dict) -> dict[str, dict]:
    """Score and method from each ValueDrift metric; the verdict from its bound test."""
    scores = {
        m["id"]: m
        for m in report["metrics"]
        if m["config"].get("type") == "evidently:metric_v2:ValueDrift"
    }
    verdicts = {}
    for test in report["tests"]:
        metric = scores.get(test["metric_config"]["metric_id"])
        if metric is None:
            continue
        score, drifted = float(metric["value"]), test["status"] == "FAIL"
        verdicts[metric["config"]["column"]] = {
            "score": score,
            "method": metric["config"]["method"],
            "threshold": metric["config"]["threshold"],
            "drifted": drifted,
            "drift": drift_degree(score, metric["config"]["threshold"], drifted),
        }
    return verdicts


def drift_degree(score: float, threshold: float, drifted: bool) -> float:
    """The score turned so that higher always means more drift: ``1 - p`` for a test's
    p-value (drift below the threshold), the distance itself for a distance (drift at or
    above it). Which one a method gives shows in its verdict, so no list of Evidently's
    methods is kept (a custom test is read the same way)."""
    is_p_value = (score < threshold) == drifted
    return 1.0 - score if is_p_value else score
