"""Label quality, judged before a retraining starts.

Labels decide what the next model learns and, through the gate's evidence, whether it is
promoted; whoever holds a labelling key can send them. So a pending retraining first
checks its labels, and a failed check holds the trigger with its reasons (``loopline
status``, the ``loopline_retraining_held`` metric, an alert); the champion stays.

- **Reviewed labels.** At least ``min_reviewed`` of the window's predictions carry a
  label from a reviewer key (``LOOPLINE_LABEL_REVIEWERS``). Reviewed items are never
  trained on: they judge the other sources here, and the retrained model in its
  guardrail (:mod:`loopline.ml.retraining_data`).
- **Agreement with the reviewers.** Every label a source sent counts, corrected or not. A
  source whose labels disagree with the reviewed labels on more than ``max_disagreement``
  of the items both labelled is named, and so is one too few of whose items (under 10)
  were reviewed to judge it.
- **The label mix.** Labels whose class shares moved far from the champion's training
  data (total variation over 0.5, chi-square p < 0.001) are held: a skew that large is
  more often a broken or hostile labeller than a change in the world.
- **Contradictions.** A source whose labels contradict an earlier label of the same item
  on more than ``max_disagreement`` of its labels (at least 10 times) is named: flipping
  others' labels either buys its own (``LOOPLINE_LABEL_CONFLICTS=last``) or, by default,
  strikes both from training (``exclude``).
- **Only what was judged is used.** The verdict names the last label event it judged
  (``labels_through``); the retraining takes no item labelled after it, so labels sent
  between the check and the retraining wait for the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from loopline.monitoring.policy import Policy
from loopline.storage.feedback import FeedbackStore

MIN_SHARED = 10  # items a source and the reviewers both labelled, before judging it
MIN_MIX = 50  # labels before their mix is judged
MAX_SHIFT = 0.5  # total variation between the label mix and the training data's


@dataclass
class LabelVerdict:
    holds: list[str] = field(default_factory=list)  # empty: the labels may be used
    facts: dict = field(default_factory=dict)


def check_labels(
    feedback: FeedbackStore,
    after: int,
    *,
    reviewers: tuple[str, ...],
    policy: Policy,
    reference: pd.Series | None = None,
) -> LabelVerdict:
    """Judge the labels of the predictions numbered after ``after``. ``reference``: the
    champion's training labels, as class names (None: a regressor, not judged by mix)."""
    labels = feedback.by_source(after)
    keys = list(zip(labels["request_id"], labels["item"], strict=True))
    first: dict = {}  # each item's first label (the events come oldest first)
    for key, label in zip(keys, labels["label"], strict=True):
        first.setdefault(key, label)
    labels["contradicts"] = [label != first[k] for k, label in zip(keys, labels["label"], strict=True)]  # fmt: skip
    is_review = labels["source"].isin(reviewers)
    reviewed = labels[is_review].drop_duplicates(["request_id", "item"], keep="last")
    others = labels[~is_review]
    verdict = LabelVerdict(
        facts={
            "labels_by_source": {
                str(k): int(v) for k, v in others["source"].value_counts().items()
            },
            "reviewed": len(reviewed),
            "conflicting_items": feedback.conflicting(),
            "labels_through": int(labels["id"].max()) if len(labels) else 0,
        }
    )
    for source, rows in others.groupby("source"):
        flipped = int(rows["contradicts"].sum())
        if flipped >= MIN_SHARED and flipped / len(rows) > policy.max_disagreement:
            verdict.holds.append(
                f"labels from {source!r} contradict an earlier label of the same item "
                f"{flipped} times in {len(rows)} ({flipped / len(rows):.0%} > "
                f"{policy.max_disagreement:.0%}); its labels are not trusted"
            )
    if len(reviewed) < policy.min_reviewed:
        who = (
            f"a key named in LOOPLINE_LABEL_REVIEWERS ({', '.join(reviewers)})"
            if reviewers
            else "a reviewer key (none is configured: set LOOPLINE_LABEL_REVIEWERS)"
        )
        verdict.holds.append(
            f"{len(reviewed)} of the {policy.min_reviewed} reviewed labels needed: {who} "
            "must label a sample of these predictions (or lower min_reviewed)"
        )
    truth = dict(
        zip(
            zip(reviewed["request_id"], reviewed["item"], strict=True),
            reviewed["label"],
            strict=True,
        )
    )
    agreement = {}
    for source, rows in others.groupby("source"):
        keys = list(zip(rows["request_id"], rows["item"], strict=True))
        shared = [(k, label) for k, label in zip(keys, rows["label"], strict=True) if k in truth]
        if len(shared) < MIN_SHARED:
            if (
                len(rows) >= MIN_SHARED
                and policy.min_reviewed
                and len(reviewed) >= policy.min_reviewed
            ):
                verdict.holds.append(
                    f"labels from {source!r}: only {len(shared)} of its {len(rows)} were "
                    f"reviewed; a reviewer must label at least {MIN_SHARED} of the items it "
                    "labelled, or its labels are not trusted"
                )
            continue
        disagree = sum(label != truth[k] for k, label in shared)
        agreement[str(source)] = {"shared": len(shared), "disagree": disagree}
        if disagree / len(shared) > policy.max_disagreement:
            verdict.holds.append(
                f"labels from {source!r} disagree with the reviewed labels on {disagree} of "
                f"the {len(shared)} items both labelled ({disagree / len(shared):.0%} > "
                f"{policy.max_disagreement:.0%}); its labels are not trusted"
            )
    verdict.facts["agreement_with_reviewers"] = agreement
    if reference is not None and len(others) >= MIN_MIX:
        shift, p_value = label_shift(others["label"].astype(str), reference.astype(str))
        verdict.facts["label_mix"] = {"total_variation": round(shift, 4), "p_value": p_value}
        if shift > MAX_SHIFT and p_value < 0.001:
            verdict.holds.append(
                f"the labels' class mix moved {shift:.0%} (total variation) from the champion's "
                f"training data (chi-square p = {p_value:.2g}); check the labeller"
            )
    return verdict


def label_shift(labels: pd.Series, reference: pd.Series) -> tuple[float, float]:
    """Total variation between two label mixes, and a chi-square test of their counts."""
    from scipy.stats import chi2_contingency

    classes = sorted(set(labels) | set(reference))
    seen = labels.value_counts().reindex(classes, fill_value=0).to_numpy()
    known = reference.value_counts().reindex(classes, fill_value=0).to_numpy()
    shift = 0.5 * float(np.abs(seen / seen.sum() - known / known.sum()).sum())
    table = np.array([seen, known]) + 0.5  # no empty cell
    return shift, float(chi2_contingency(table)[1])
