from components.gate import decide

GOOD = {"accuracy": 0.97, "macro_f1": 0.96}


def test_first_model_is_promoted():
    decision = decide(metric="accuracy", margin=0.0, challenger=GOOD, champion=None)
    assert decision.promote and decision.reasons == ["there is no champion yet"]


def test_challenger_must_beat_champion_by_more_than_the_margin():
    champion = {"accuracy": 0.96, "macro_f1": 0.97}
    assert decide(metric="accuracy", margin=0.0, challenger=GOOD, champion=champion).promote
    held = decide(
        metric="accuracy", margin=0.02, challenger=GOOD, champion=champion, champion_version="3"
    )
    assert not held.promote and held.champion_score == 0.96
    assert "does not beat champion v3" in held.reasons[0]
    assert not decide(metric="macro_f1", margin=0.0, challenger=GOOD, champion=champion).promote


def test_a_tie_keeps_the_champion():
    assert not decide(metric="accuracy", margin=0.0, challenger=GOOD, champion=dict(GOOD)).promote


def test_incomparable_champion_is_never_replaced_silently():
    decision = decide(
        metric="accuracy", margin=0.0, challenger=GOOD, champion=None,
        champion_version="1", incompatible="input shapes differ",
    )  # fmt: skip
    assert not decision.promote and "input shapes differ" in decision.reasons[0]
