"""The champion/challenger gate: promote only a model that is better on evidence.

Both models predict the same rows, and the gate compares them row by row:
- **Evidence** (the run's test split; for a retraining, held-out recent labelled data):
  the challenger must be better by a statistically significant margin. For accuracy that
  is McNemar's exact test on the rows where exactly one model is right; for the macro
  metrics, a paired bootstrap of the difference. One-sided, at level ``alpha``.
- **Guardrail** (trusted held-out rows kept with the champion, which feedback never
  changes): the challenger must not lose more than ``tolerance`` there, must not be
  significantly worse there (the same paired test, the other way round), and a
  classifier must not lose more than ``class_tolerance`` of any one class's recall with
  significance. So a model fitted to a new slice of traffic, or to labels that teach it
  something false, cannot quietly forget what the reviewed rows say.
- **Too few rows** to decide is a refusal, with that reason.

A one-row difference on a few hundred noisy labels is noise: the test says so, and the
champion stays. Every decision records its test, p-value, interval and sample sizes.
Pure functions over label arrays: no model, registry or file is touched here.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from loopline.core.settings import GateSettings

# scipy.stats is imported inside the two functions that use it: it takes 0.5-2 s to
# import, and loopline.ml.steps imports this module for the register step's re-run, which
# uses GateDecision alone (the cached training re-run of benchmarks/cli_latency, ≤ 3 s).

BOOTSTRAP_SAMPLES = 2000


TASKS = ("classification", "regression")
REGRESSION_METRIC = "mae"  # a regressor is judged on its per-row absolute errors


@dataclass(frozen=True)
class Rows:
    """One set of rows both models predicted: the truth and each model's answer (a class
    index for a classifier, a number for a regressor)."""

    truth: np.ndarray
    challenger: np.ndarray
    champion: np.ndarray


@dataclass
class Comparison:
    rows: int
    challenger: float
    champion: float
    test: str
    p_value: float  # one-sided, for "the challenger is better"
    interval: list[float]  # (1 - 2 alpha) interval of the challenger's improvement
    challenger_only: int  # rows only the challenger got right (a regressor: got closer)
    champion_only: int  # rows only the champion got right (a regressor: got closer)
    lower_is_better: bool = False  # an error (MAE), not a score

    @property
    def difference(self) -> float:
        """How much better the challenger is: its score's gain, or its error's drop."""
        gain = self.challenger - self.champion
        return -gain if self.lower_is_better else gain

    @property
    def loss(self) -> float:
        """How much worse the challenger is, as the guardrail's tolerance reads it: a
        score's absolute drop, or an error's relative growth."""
        if self.lower_is_better:
            return -self.difference / max(self.champion, 1e-12)
        return -self.difference


@dataclass
class GateDecision:
    promote: bool
    metric: str
    policy: dict
    challenger_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    evidence: Comparison | None = None
    guardrail: Comparison | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    policy: GateSettings,
    *,
    challenger_score: float,
    evidence: Rows | None,
    guardrail: Rows | None = None,
    champion_version: str | None = None,
    incompatible: str | None = None,
    num_classes: int | None = None,
    task: str = "classification",
) -> GateDecision:
    """Promote when there is no champion, or when the challenger is significantly better
    on ``evidence`` and does not regress on ``guardrail``. A classifier is compared on
    ``policy.metric``; a regressor on its absolute errors (:func:`compare_errors`)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r}; use one of {', '.join(TASKS)}")
    metric = policy.metric if task == "classification" else REGRESSION_METRIC
    decision = GateDecision(False, metric, asdict(policy), challenger_score, champion_version)
    if incompatible:
        decision.reasons.append(f"champion v{champion_version} cannot be compared: {incompatible}")
        return decision
    if champion_version is None or evidence is None:
        decision.promote = True
        decision.reasons.append("there is no champion yet")
        return decision
    if task == "regression":
        judge = functools.partial(compare_errors, alpha=policy.alpha)
    else:
        judge = functools.partial(
            compare, policy, num_classes=num_classes or _classes(evidence, guardrail)
        )
    rows = len(evidence.truth)
    decision.evidence = judge(evidence)
    decision.champion_score = decision.evidence.champion
    if rows < policy.min_rows:
        decision.reasons.append(
            f"too few labelled rows to decide: {rows} < {policy.min_rows}; "
            "collect more labels (or lower LOOPLINE_GATE_MIN_ROWS) and retrain"
        )
        return decision
    better = (
        decision.evidence.p_value < policy.alpha and decision.evidence.difference > policy.margin
    )
    decision.reasons.append(_describe(policy, metric, decision.evidence, champion_version, better))
    if not better:
        return decision
    if guardrail is not None and len(guardrail.truth):
        decision.guardrail = judge(guardrail)
        problems = _guardrail_problems(policy, decision.guardrail, guardrail, task)
        decision.reasons.append(
            f"guardrail ({decision.guardrail.rows} trusted held-out rows kept with "
            f"v{champion_version}): {metric} {decision.guardrail.challenger:.4f} vs "
            f"{decision.guardrail.champion:.4f}"
            + (" holds" if not problems else ": " + "; ".join(problems))
        )
        if problems:
            return decision
    decision.promote = True
    return decision


def _guardrail_problems(policy: GateSettings, judged: Comparison, rows: Rows, task: str):
    """Why the guardrail does not hold: too large a loss, a significant one, or one class
    collapsing (what labels that teach something false do first)."""
    problems = []
    if judged.loss > policy.tolerance:
        problems.append(f"a loss of {judged.loss:.4f} > tolerance {policy.tolerance:g}")
    # The one-sided p of "worse": the exact test with the sides swapped, or the
    # bootstrap's other tail.
    exact = judged.test.startswith("McNemar")
    worse = mcnemar_p(judged.champion_only, judged.challenger_only) if exact else 1 - judged.p_value
    if judged.loss > 0 and worse < policy.alpha:
        problems.append(
            f"significantly worse ({judged.champion_only} rows only the champion got right, "
            f"{judged.challenger_only} only the challenger; one-sided p = {worse:.2g})"
        )
    if task == "classification":
        problems += class_collapses(rows, policy)
    return problems


MIN_CLASS_ROWS = 10  # fewer rows of a class than this say nothing about its recall


def class_collapses(rows: Rows, policy: GateSettings) -> list[str]:
    """Classes whose recall the challenger loses by more than ``class_tolerance``, with a
    one-sided McNemar test on that class's rows at ``alpha`` over the classes tested."""
    truth, challenger, champion = (
        np.asarray(a) for a in (rows.truth, rows.challenger, rows.champion)
    )
    classes = [c for c in np.unique(truth) if np.sum(truth == c) >= MIN_CLASS_ROWS]
    found = []
    for c in classes:
        mine = truth == c
        right_chal, right_champ = challenger[mine] == c, champion[mine] == c
        loss = float(right_champ.mean() - right_chal.mean())
        only_champ = int(np.sum(right_champ & ~right_chal))
        only_chal = int(np.sum(right_chal & ~right_champ))
        p = mcnemar_p(only_champ, only_chal)
        if loss > policy.class_tolerance and p < policy.alpha / len(classes):
            found.append(
                f"class {c} collapses: recall {right_chal.mean():.3f} vs "
                f"{right_champ.mean():.3f} on {int(mine.sum())} rows (p = {p:.2g})"
            )
    return found


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """The gate's verdict on a version, where `loopline status` and the MLflow UI see it."""
    brief = {
        key: getattr(decision, key)
        and {
            "test": getattr(decision, key).test,
            "rows": getattr(decision, key).rows,
            "p_value": round(getattr(decision, key).p_value, 6),
            "interval": [round(v, 6) for v in getattr(decision, key).interval],
            "challenger": round(getattr(decision, key).challenger, 6),
            "champion": round(getattr(decision, key).champion, 6),
        }
        for key in ("evidence", "guardrail")
    }
    return {
        "gate.promoted": str(decision.promote).lower(),
        "gate.reasons": "; ".join(decision.reasons)[:4000],
        "gate.champion_version": decision.champion_version or "",
        "gate.decision": json.dumps({"metric": decision.metric, **brief}),
    }


def compare_errors(rows: Rows, *, alpha: float) -> Comparison:
    """Two regressors on the same rows: their mean absolute errors, and a one-sided paired
    bootstrap of the drop in MAE (the rows' error differences resampled together)."""
    truth, challenger, champion = (
        np.asarray(a, dtype=np.float64) for a in (rows.truth, rows.challenger, rows.champion)
    )
    mine, theirs = np.abs(challenger - truth), np.abs(champion - truth)
    drops = theirs - mine  # per row: how much closer the challenger got
    rng = np.random.default_rng(0)  # the same data always gets the same decision
    n = len(drops)
    means = np.concatenate(
        [
            drops[rng.integers(0, n, (chunk, n))].mean(axis=1)
            for chunk in _chunks(BOOTSTRAP_SAMPLES, max(1, 4_000_000 // max(n, 1)))
        ]
    )
    p_value = (np.sum(means <= 0) + 1) / (BOOTSTRAP_SAMPLES + 1)
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Comparison(
        rows=n,
        challenger=float(mine.mean()),
        champion=float(theirs.mean()),
        test=f"paired bootstrap of the MAE drop, {BOOTSTRAP_SAMPLES} resamples (one-sided)",
        p_value=float(p_value),
        interval=[float(low), float(high)],
        challenger_only=int(np.sum(mine < theirs)),
        champion_only=int(np.sum(theirs < mine)),
        lower_is_better=True,
    )


def _chunks(total: int, size: int):
    """Sizes that add up to ``total``, none larger than ``size`` (memory stays bounded)."""
    while total > 0:
        yield min(size, total)
        total -= size


def compare(policy: GateSettings, rows: Rows, num_classes: int) -> Comparison:
    """Both models' ``policy.metric`` on the same rows, with a one-sided paired test."""
    truth, challenger, champion = (
        np.asarray(a) for a in (rows.truth, rows.challenger, rows.champion)
    )
    right_chal, right_champ = challenger == truth, champion == truth
    only_chal = int(np.sum(right_chal & ~right_champ))
    only_champ = int(np.sum(right_champ & ~right_chal))
    score = METRIC_FUNCTIONS[policy.metric]
    if policy.metric == "accuracy":
        test, p_value = "McNemar exact (one-sided)", mcnemar_p(only_chal, only_champ)
        interval = _accuracy_interval(right_chal, right_champ, policy.alpha)
    else:
        test = f"paired bootstrap, {BOOTSTRAP_SAMPLES} resamples (one-sided)"
        p_value, interval = _bootstrap(
            score, truth, challenger, champion, num_classes, policy.alpha
        )
    return Comparison(
        rows=len(truth),
        challenger=float(score(truth, challenger, num_classes)),
        champion=float(score(truth, champion, num_classes)),
        test=test,
        p_value=float(p_value),
        interval=[float(v) for v in interval],
        challenger_only=only_chal,
        champion_only=only_champ,
    )


def mcnemar_p(challenger_only: int, champion_only: int) -> float:
    """P(at least ``challenger_only`` of the discordant rows favour the challenger) if
    both models were equally good: the exact binomial tail at 1/2."""
    from scipy.stats import binom

    discordant = challenger_only + champion_only
    if discordant == 0:
        return 1.0
    return float(binom.sf(challenger_only - 1, discordant, 0.5))


def _accuracy_interval(right_chal, right_champ, alpha: float) -> list[float]:
    """A normal-approximation interval of the paired accuracy difference."""
    from scipy.stats import norm

    diff = right_chal.astype(float) - right_champ.astype(float)
    n = max(len(diff), 1)
    half = norm.ppf(1 - alpha) * float(np.std(diff, ddof=1) if n > 1 else 0.0) / np.sqrt(n)
    return [float(diff.mean() - half), float(diff.mean() + half)]


def _bootstrap(score, truth, challenger, champion, num_classes: int, alpha: float):
    rng = np.random.default_rng(0)  # the same data always gets the same decision
    n = len(truth)
    differences = np.empty(BOOTSTRAP_SAMPLES)
    for b in range(BOOTSTRAP_SAMPLES):
        pick = rng.integers(0, n, n)
        challenger_score = score(truth[pick], challenger[pick], num_classes)
        champion_score = score(truth[pick], champion[pick], num_classes)
        differences[b] = challenger_score - champion_score
    p_value = (np.sum(differences <= 0) + 1) / (BOOTSTRAP_SAMPLES + 1)
    low, high = np.quantile(differences, [alpha, 1 - alpha])
    return p_value, [low, high]


def _describe(
    policy: GateSettings, metric: str, evidence: Comparison, champion_version: str, better: bool
) -> str:
    verdict = "is significantly better than" if better else "is not significantly better than"
    right = "closer" if evidence.lower_is_better else "right"
    return (
        f"challenger {metric} {evidence.challenger:.4f} {verdict} champion "
        f"v{champion_version} {evidence.champion:.4f} on the same {evidence.rows} labelled rows "
        f"({evidence.test}: p = {evidence.p_value:.3g}, needs < {policy.alpha:g}; "
        f"only the challenger {right} on {evidence.challenger_only} rows, only the champion on "
        f"{evidence.champion_only}; difference interval [{evidence.interval[0]:+.4f}, "
        f"{evidence.interval[1]:+.4f}]"
        + (f"; margin {policy.margin:g}" if policy.margin else "")
        + ")"
    )


def _classes(*sets: Rows | None) -> int:
    arrays = [a for r in sets if r is not None for a in (r.truth, r.challenger, r.champion)]
    return max(int(np.max(a)) for a in arrays if len(a)) + 1


def _confusion(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)


def _macro(kind: str):
    def score(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
        matrix = _confusion(
            np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64), k
        )
        hits = np.diag(matrix).astype(float)
        predicted_counts, true_counts = matrix.sum(0), matrix.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted_counts > 0, hits / predicted_counts, 0.0)
            recall = np.where(true_counts > 0, hits / true_counts, 0.0)
            f1 = np.where(
                precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0
            )
        # Averaged over every class of the model, as the evaluation report does.
        values = {"macro_precision": precision, "macro_recall": recall, "macro_f1": f1}[kind]
        return float(values.mean())

    return score


def _accuracy(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    return float(np.mean(np.asarray(truth) == np.asarray(predicted))) if len(truth) else 0.0


METRIC_FUNCTIONS = {
    "accuracy": _accuracy,
    "macro_f1": _macro("macro_f1"),
    "macro_precision": _macro("macro_precision"),
    "macro_recall": _macro("macro_recall"),
}
