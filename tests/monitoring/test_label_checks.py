"""Label checks before retraining, on real databases (SQLite and PostgreSQL): each check
is tried with labels that must pass it and labels that must be held."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from loopline.monitoring.label_checks import check_labels
from loopline.monitoring.policy import Policy
from loopline.storage.feedback import FeedbackStore, Label
from loopline.storage.predictions import Answer, PredictionLog

POLICY = Policy(min_reviewed=20, max_disagreement=0.2)
REFERENCE = pd.Series([str(i % 10) for i in range(500)])  # a balanced training mix


def served(database, rows: int) -> list[str]:
    log = PredictionLog(database)
    try:
        ids = [f"r{i}" for i in range(rows)]
        for request_id in ids:
            log.append(
                Answer(request_id, "1", np.zeros((1, 2), np.float32), ["0"], np.ones((1, 1)))
            )
    finally:
        log.close()
    return ids


def judge(database, policy=POLICY, reviewers=("reviewer",)):
    return check_labels(
        FeedbackStore(database), 0, reviewers=reviewers, policy=policy, reference=REFERENCE
    )


def test_honest_labels_with_a_review_pass(database):
    ids = served(database, 200)
    truth = [str(i % 10) for i in range(200)]
    store = FeedbackStore(database)
    store.attach([Label(r, 0, t, "labeller") for r, t in zip(ids, truth, strict=True)])
    store.attach([Label(r, 0, t, "reviewer") for r, t in zip(ids[::5], truth[::5], strict=True)])
    verdict = judge(database)
    assert verdict.holds == [], verdict.holds
    assert verdict.facts["reviewed"] == 40
    assert verdict.facts["agreement_with_reviewers"]["labeller"] == {"shared": 40, "disagree": 0}


def test_without_enough_reviewed_labels_the_retraining_waits(database):
    ids = served(database, 100)
    FeedbackStore(database).attach(
        [Label(r, 0, str(i % 10), "labeller") for i, r in enumerate(ids)]
    )
    [why] = judge(database).holds
    assert "0 of the 20 reviewed labels needed" in why and "reviewer" in why
    [unconfigured] = judge(database, reviewers=()).holds
    assert "none is configured: set LOOPLINE_LABEL_REVIEWERS" in unconfigured
    assert judge(database, dataclasses.replace(POLICY, min_reviewed=0)).holds == []


def test_a_source_that_disagrees_with_the_reviewers_is_named(database):
    ids = served(database, 200)
    truth = [str(i % 10) for i in range(200)]
    store = FeedbackStore(database)
    store.attach([Label(r, 0, t, "honest") for r, t in zip(ids[:100], truth[:100], strict=True)])
    shifted = [str((int(t) + 1) % 10) for t in truth[100:]]  # the next class
    store.attach([Label(r, 0, t, "mallory") for r, t in zip(ids[100:], shifted, strict=True)])
    store.attach([Label(r, 0, t, "reviewer") for r, t in zip(ids[::4], truth[::4], strict=True)])
    holds = judge(database).holds
    assert len(holds) == 1, holds
    assert "labels from 'mallory' disagree with the reviewed labels on 25 of the 25" in holds[0]
    # The reviewed items are conflicts in the feedback table: kept, counted, left out.
    assert store.conflicting() == 25
    assert len(store.labelled()) == 200 - 25


def test_a_label_mix_far_from_the_training_data_is_held(database):
    ids = served(database, 120)
    store = FeedbackStore(database)
    store.attach([Label(r, 0, "7", "labeller") for r in ids])  # every item one class
    store.attach([Label(r, 0, "7", "reviewer") for r in ids[:20]])
    holds = judge(database).holds
    assert len(holds) == 1 and "class mix moved 90%" in holds[0], holds


@pytest.mark.parametrize(("policy", "label"), [("first", "3"), ("last", "5"), ("exclude", None)])
def test_a_conflicting_label_is_kept_and_the_policy_decides(database, policy, label):
    [request] = served(database, 1)
    store = FeedbackStore(database, policy)
    assert store.attach([Label(request, 0, "3", "a")])["stored"] == 1
    assert store.attach([Label(request, 0, "5", "b")])["conflicts"] == 1
    rows = store.labelled()
    assert (rows["label"].tolist() or [None])[0] == label
    assert sorted(store.by_source()["source"]) == ["a", "b"]  # both kept, with who sent them


def test_a_source_that_flips_earlier_labels_is_named(database):
    ids = served(database, 200)
    truth = [str(i % 10) for i in range(200)]
    store = FeedbackStore(database)
    store.attach([Label(r, 0, t, "honest") for r, t in zip(ids, truth, strict=True)])
    store.attach([Label(r, 0, t, "reviewer") for r, t in zip(ids[::5], truth[::5], strict=True)])
    unreviewed = [i for i in range(200) if i % 5][:60]
    # Relabelled items nobody reviewed: under `last` these labels would be trained on.
    store.attach([Label(ids[i], 0, str((i + 1) % 10), "mallory") for i in unreviewed])
    # Putting an item's first label back contradicts nothing.
    store.attach([Label(ids[i], 0, truth[i], "fixer") for i in unreviewed[:12]])
    holds = judge(database).holds
    flips = [h for h in holds if "contradict an earlier label" in h]
    assert len(flips) == 1 and "'mallory' contradict" in flips[0], holds
    assert "60 times in 60" in flips[0]
    assert not any("'honest'" in h or "'fixer' contradict" in h for h in holds)


def test_labels_sent_after_the_check_wait_for_the_next_retraining(database):
    ids = served(database, 100)
    store = FeedbackStore(database, "last")
    store.attach([Label(r, 0, "1", "labeller") for r in ids[:50]])
    through = judge(database).facts["labels_through"]
    store.attach([Label(r, 0, "2", "labeller") for r in ids[50:]])  # new items, unjudged
    store.attach([Label(ids[0], 0, "7", "labeller")])  # a judged item, relabelled unjudged
    everything = store.labelled()
    assert len(everything) == 100 and everything["label"].iloc[0] == "7"
    judged = store.labelled(through=through)
    assert sorted(judged["request_id"]) == sorted(ids[1:50])
    assert set(judged["label"]) == {"1"}
    assert len(store.by_source(through=through)) == 50
    assert judge(database).facts["labels_through"] > through
