"""The gate for regressors: a paired one-sided test on the rows' absolute errors, plus the
guardrail. A worse regressor is never promoted on noise; a better one is, on evidence."""

import numpy as np
import pytest

from loopline.core.settings import GateSettings
from loopline.ml.gate import Rows, decide

POLICY = GateSettings()
SEEDS = range(40)


def rows(seed: int, *, champion_sd: float, challenger_sd: float, label_sd: float = 0.0, n=300):
    """Truth, and each model's answers off it by its own noise; the labels the gate sees
    carry ``label_sd`` of noise of their own (noisy feedback)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(150, 50, n)
    labels = truth + rng.normal(0, label_sd, n)
    champion = truth + rng.normal(0, champion_sd, n)
    challenger = truth + rng.normal(0, challenger_sd, n)
    return Rows(labels, challenger, champion)


def judged(evidence, guardrail=None):
    return decide(
        POLICY,
        challenger_score=0.0,
        evidence=evidence,
        guardrail=guardrail,
        champion_version="1",
        task="regression",
    )


def test_a_truly_worse_regressor_is_never_promoted_on_noisy_labels():
    """Forty seeded retrainings whose labels are noisier than either model: the challenger
    is 50% worse in truth (as one retrained on bad labels is), and noise alone must never
    carry it past the gate. (A model only slightly worse than noise can resolve passes a
    5% test about as often as an equal one; the next test bounds that rate.)"""
    promoted = [
        seed
        for seed in SEEDS
        if judged(rows(seed, champion_sd=20, challenger_sd=30, label_sd=40)).promote
    ]
    assert promoted == []


def test_an_equal_regressor_is_promoted_no_more_often_than_alpha():
    promoted = sum(
        judged(rows(s, champion_sd=20, challenger_sd=20, label_sd=10)).promote for s in SEEDS
    )
    assert promoted <= max(1, int(len(SEEDS) * POLICY.alpha * 2))


def test_a_truly_better_regressor_is_promoted_with_its_evidence():
    decision = judged(rows(0, champion_sd=30, challenger_sd=15, label_sd=5))
    assert decision.promote and decision.metric == "mae"
    evidence = decision.evidence
    assert evidence.challenger < evidence.champion and evidence.p_value < POLICY.alpha
    assert evidence.interval[0] > 0 and evidence.difference > 0
    assert "MAE" in evidence.test and "closer on" in decision.reasons[0]


def test_the_guardrail_refuses_a_regressor_that_forgets_the_old_traffic():
    evidence = rows(1, champion_sd=30, challenger_sd=15)
    forgot = rows(2, champion_sd=20, challenger_sd=26)  # 30% more error on the old rows
    decision = judged(evidence, guardrail=forgot)
    assert not decision.promote
    assert decision.guardrail.loss > POLICY.tolerance
    assert "tolerance" in decision.reasons[-1]


def test_too_few_rows_cannot_decide_and_an_unknown_task_is_refused():
    decision = judged(rows(3, champion_sd=30, challenger_sd=5, n=POLICY.min_rows - 1))
    assert not decision.promote and "too few labelled rows" in decision.reasons[0]
    with pytest.raises(ValueError, match="task 'ranking'"):
        decide(POLICY, challenger_score=0.0, evidence=None, task="ranking")
