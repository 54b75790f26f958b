"""The gate's statistics, on label arrays built to sit on either side of each rule."""

import numpy as np
import pytest

from loopline.core.settings import GateSettings
from loopline.ml.gate import Rows, compare, decide, mcnemar_p

POLICY = GateSettings()


def rows(truth, challenger_right: np.ndarray, champion_right: np.ndarray, k: int = 10) -> Rows:
    """Rows where each model is right exactly where its mask says (wrong = next class)."""
    truth = np.asarray(truth)
    return Rows(
        truth,
        np.where(challenger_right, truth, (truth + 1) % k),
        np.where(champion_right, truth, (truth + 1) % k),
    )


def paired(n: int, both: int, only_challenger: int, only_champion: int, seed: int = 0) -> Rows:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 10, n)
    kinds = np.array(
        ["both"] * both
        + ["chal"] * only_challenger
        + ["champ"] * only_champion
        + ["none"] * (n - both - only_challenger - only_champion)
    )
    rng.shuffle(kinds)
    return rows(truth, np.isin(kinds, ["both", "chal"]), np.isin(kinds, ["both", "champ"]))


def test_mcnemar_is_the_exact_binomial_tail():
    # P(X >= 10 | X ~ Binomial(12, 1/2)) = (66 + 12 + 1) / 4096
    assert mcnemar_p(10, 2) == pytest.approx(79 / 4096)
    assert mcnemar_p(1, 0) == pytest.approx(0.5)
    assert mcnemar_p(0, 0) == 1.0


def test_first_model_is_promoted():
    decision = decide(POLICY, challenger_score=0.9, evidence=None)
    assert decision.promote and decision.reasons == ["there is no champion yet"]


def test_one_row_of_difference_is_noise_and_keeps_the_champion():
    # The case: 0.0981 vs 0.0955 on 377 noisy rows, one row apart.
    evidence = paired(377, 30, 7, 6)
    decision = decide(POLICY, challenger_score=0.098, evidence=evidence, champion_version="1")
    assert not decision.promote
    assert decision.evidence.challenger > decision.evidence.champion
    assert decision.evidence.p_value > 0.4
    assert "is not significantly better" in decision.reasons[0]
    assert "p = " in decision.reasons[0] and "377 labelled rows" in decision.reasons[0]


def test_a_clearly_better_challenger_is_promoted_with_its_evidence_recorded():
    decision = decide(
        POLICY, challenger_score=0.9, evidence=paired(300, 200, 40, 5), champion_version="4"
    )
    assert decision.promote
    evidence = decision.evidence
    assert (evidence.rows, evidence.challenger_only, evidence.champion_only) == (300, 40, 5)
    assert evidence.p_value < 1e-6 and evidence.interval[0] > 0
    assert evidence.test.startswith("McNemar")


def test_too_few_labelled_rows_is_a_refusal_with_that_reason():
    decision = decide(
        POLICY, challenger_score=1.0, evidence=paired(20, 0, 20, 0), champion_version="1"
    )
    assert not decision.promote
    assert "too few labelled rows to decide: 20 < 30" in decision.reasons[0]


def test_a_challenger_that_forgets_the_guardrail_is_refused():
    better_on_new = paired(300, 200, 40, 5)
    worse_on_old = paired(400, 300, 2, 30, seed=1)  # 0.755 vs 0.825
    decision = decide(
        POLICY,
        challenger_score=0.9,
        evidence=better_on_new,
        guardrail=worse_on_old,
        champion_version="2",
    )
    assert not decision.promote
    assert "guardrail (400 trusted held-out rows" in decision.reasons[-1]
    assert "> tolerance 0.02" in decision.reasons[-1]
    within = paired(400, 300, 2, 6, seed=1)  # a loss of 0.01 is within the tolerance
    assert decide(
        POLICY,
        challenger_score=0.9,
        evidence=better_on_new,
        guardrail=within,
        champion_version="2",
    ).promote


def test_the_margin_still_applies_on_top_of_significance():
    strict = GateSettings(margin=0.2)
    decision = decide(
        strict, challenger_score=0.9, evidence=paired(300, 200, 40, 5), champion_version="1"
    )
    assert not decision.promote and "margin 0.2" in decision.reasons[0]


def test_macro_metrics_use_a_deterministic_paired_bootstrap():
    policy = GateSettings(metric="macro_f1")
    better = paired(300, 200, 40, 5)
    first = compare(policy, better, 10)
    assert first == compare(policy, better, 10)  # same data, same p-value
    assert first.test.startswith("paired bootstrap") and first.p_value < 0.01
    tie = paired(300, 200, 10, 10)
    assert compare(policy, tie, 10).p_value > 0.2
    assert not decide(policy, challenger_score=0.5, evidence=tie, champion_version="1").promote


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    from loopline.ml.gate import METRIC_FUNCTIONS

    rng = np.random.default_rng(3)
    truth, predicted = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    expected = f1_score(truth, predicted, labels=list(range(6)), average="macro", zero_division=0)
    assert METRIC_FUNCTIONS["macro_f1"](truth, predicted, 6) == pytest.approx(expected)


def test_incomparable_champion_is_never_replaced_silently():
    decision = decide(
        POLICY,
        challenger_score=1.0,
        evidence=None,
        champion_version="1",
        incompatible="input shapes differ",
    )
    assert not decision.promote and "input shapes differ" in decision.reasons[0]
