"""Ground truth for served predictions: labels attached by request id (and item).

Labels live beside the prediction log, in the platform's database, so monitoring joins
them without a second store. Bodies and files of labels are read and checked in
:mod:`loopline.serving.labels`. A label for a prediction that was never logged is reported,
not stored.

Every label is recorded with its source (the labelling key that sent it) and time, and
none is ever overwritten: a different label for an item already labelled is a conflict,
kept and counted. What the readers take as an item's truth is a policy
(``LOOPLINE_LABEL_CONFLICTS``): ``exclude`` conflicting items (the default: neither
side is trusted), or take the ``first`` or the ``last`` label.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Float, bindparam, case, cast, exists, func, select, tuple_, update

from loopline.storage.database import Database
from loopline.storage.tables import feedback, label_events, predictions

CONFLICT_POLICIES = ("exclude", "first", "last")
# What labelled() gives: the prediction, its inputs, the true label and who sent it.
LABELLED = [
    "seq", "request_id", "item", "ts", "model_version", "inputs", "prediction", "label", "source"
]  # fmt: skip
CHUNK = 500


@dataclass(frozen=True)
class Label:
    request_id: str
    item: int
    label: str
    source: str = ""  # the labelling key's name (or ``cli:USER``)


class FeedbackStore:
    def __init__(self, database: Database, conflicts: str = "exclude"):
        if conflicts not in CONFLICT_POLICIES:
            raise ValueError(f"label conflicts {conflicts!r}; use {', '.join(CONFLICT_POLICIES)}")
        self.database = database
        self.conflicts = conflicts

    def attach(self, labels: list[Label]) -> dict:
        """Record labels of logged predictions; return counts (new, repeated, conflicting)
        and the labels whose prediction was never logged (reported, not stored)."""
        now = time.time()
        wanted = sorted({(lb.request_id, lb.item) for lb in labels})
        with self.database.write() as connection:
            known = self._rows(connection, predictions, wanted, [])
            first = self._rows(connection, feedback, sorted(known), [feedback.c.label])
            kept = [lb for lb in labels if (lb.request_id, lb.item) in known]
            if kept:
                connection.execute(
                    label_events.insert(),
                    [
                        {"request_id": lb.request_id, "item": lb.item, "label": lb.label,
                         "source": lb.source, "ts": now}
                        for lb in kept
                    ],
                )  # fmt: skip
            new, changed, counts = {}, {}, {"stored": 0, "repeated": 0, "conflicts": 0}
            for lb in kept:
                key = (lb.request_id, lb.item)
                if key not in first and key not in new:
                    new[key] = lb
                    counts["stored"] += 1
                    continue
                original = first[key][0] if key in first else new[key].label
                conflict = lb.label != original
                counts["conflicts" if conflict else "repeated"] += 1
                before = changed.get(key, (0, None))[0]
                changed[key] = (before + conflict, lb.label)
            if new:
                connection.execute(
                    self.database.insert_new(feedback, ["request_id", "item"]),
                    [
                        {"request_id": r, "item": i, "label": lb.label, "ts": now,
                         "source": lb.source, "latest": lb.label, "conflicts": 0}
                        for (r, i), lb in new.items()
                    ],
                )  # fmt: skip
            # Another replica may have labelled an item first, between our read and our
            # insert (PostgreSQL does not serialise writers as SQLite does): ours came second.
            mine = self._rows(connection, feedback, list(new), [feedback.c.ts, feedback.c.label])
            for key, lb in new.items():
                first_ts, first_label = mine[key]
                if first_ts == now and first_label == lb.label:
                    continue
                conflict = lb.label != first_label
                counts["stored"] -= 1
                counts["conflicts" if conflict else "repeated"] += 1
                before = changed.get(key, (0, None))[0]
                changed[key] = (before + conflict, lb.label)
            if changed:
                connection.execute(
                    update(feedback)
                    .where(
                        (feedback.c.request_id == bindparam("r"))
                        & (feedback.c.item == bindparam("i"))
                    )
                    .values(
                        latest=bindparam("latest"),
                        conflicts=feedback.c.conflicts + bindparam("more"),
                    ),
                    [
                        {"r": r, "i": i, "latest": latest, "more": more}
                        for (r, i), (more, latest) in changed.items()
                    ],
                )
        unknown = [
            f"{lb.request_id}#{lb.item}" for lb in labels if (lb.request_id, lb.item) not in known
        ]
        return {**counts, "unknown": unknown[:20], "unknown_count": len(unknown)}

    @staticmethod
    def _rows(connection, table, keys: list, columns: list) -> dict:
        """``table``'s rows with these (request id, item) keys: key -> ``columns``."""
        found = {}
        for start in range(0, len(keys), CHUNK):
            part = keys[start : start + CHUNK]
            query = select(table.c.request_id, table.c.item, *columns).where(
                tuple_(table.c.request_id, table.c.item).in_(part)
            )
            for row in connection.execute(query):
                found[(row[0], row[1])] = tuple(row[2:])
        return found

    def conflicting(self) -> int:
        """How many labelled items have more than one label."""
        with self.database.read() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(feedback).where(feedback.c.conflicts > 0)
                ).scalar_one()
            )

    def _truth(self):
        """The column an item's true label is read from, and the items that count."""
        if self.conflicts == "last":
            return feedback.c.latest, None
        if self.conflicts == "first":
            return feedback.c.label, None
        return feedback.c.label, feedback.c.conflicts == 0

    def errors(
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ) -> tuple[int, float | None, float | None]:
        """A regressor's labelled predictions numbered ``after < seq <= upto``: how many,
        their mean absolute error and root mean squared error, computed in the database."""
        truth, _ = self._truth()
        difference = cast(predictions.c.label, Float) - cast(truth, Float)
        rows, mae, squared = self._over_labelled(
            [func.avg(func.abs(difference)), func.avg(difference * difference)],
            after,
            upto,
            model_version,
        )
        if not rows:
            return 0, None, None
        return rows, float(mae), float(squared) ** 0.5

    def accuracy(
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ) -> tuple[int, int]:
        """How many predictions numbered ``after < seq <= upto`` have a label, and how many
        of those were right: counted in the database, whatever the window's length."""
        truth, _ = self._truth()
        right = func.coalesce(func.sum(case((predictions.c.label == truth, 1), else_=0)), 0)
        rows, correct = self._over_labelled([right], after, upto, model_version)
        return int(rows), int(correct)

    def _over_labelled(self, aggregates: list, after: int, upto, model_version) -> tuple:
        """The count and ``aggregates`` over labelled predictions numbered
        ``after < seq <= upto`` (of ``model_version``, when given), in one query."""
        query = (
            select(func.count(), *aggregates)
            .select_from(
                feedback.join(
                    predictions,
                    _of_prediction(feedback),
                )
            )
            .where(predictions.c.seq > after)
        )
        if (counted := self._truth()[1]) is not None:
            query = query.where(counted)
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.database.read() as connection:
            return tuple(connection.execute(query).one())

    def labelled(
        self,
        after: int = 0,
        upto: int | None = None,
        *,
        records: bool = False,
        through: int | None = None,
    ) -> pd.DataFrame:
        """Logged predictions numbered ``after < seq <= upto`` that have a label, with
        their inputs (decoded; with ``records``, a named-column model's rows as logged),
        the served label (``prediction``), the true ``label`` and its ``source``.
        ``through``: only items none of whose labels came after label event ``through``
        (the last one the label checks judged): nothing unjudged is taken."""
        truth, counted = self._truth()
        query = (
            select(
                predictions.c.seq,
                predictions.c.request_id,
                predictions.c.item,
                predictions.c.ts,
                predictions.c.model_version,
                predictions.c.inputs,
                predictions.c.label.label("prediction"),
                truth.label("label"),
                feedback.c.source,
            )
            .join(
                feedback,
                _of_prediction(feedback),
            )
            .where(predictions.c.seq > after)
            .order_by(predictions.c.seq)
        )
        if counted is not None:
            query = query.where(counted)
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        if through is not None:
            later = (label_events.c.request_id == feedback.c.request_id) & (
                label_events.c.item == feedback.c.item
            )
            query = query.where(~exists().where(later & (label_events.c.id > through)))
        with self.database.read() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
        frame = pd.DataFrame(rows, columns=LABELLED)
        frame["inputs"] = [
            bytes(b) if records else np.frombuffer(b, dtype=np.float32) for b in frame["inputs"]
        ]
        return frame

    def by_source(self, after: int = 0, through: int | None = None) -> pd.DataFrame:
        """Every label of the items numbered after ``after``, as it arrived (oldest
        first): its event ``id``, ``request_id``, ``item``, ``seq``, ``source``, ``label``
        and the served ``prediction``; with ``through``, up to that event. The label checks
        judge all of them: a wrong label later corrected was still sent."""
        query = (
            select(
                label_events.c.id,
                label_events.c.request_id,
                label_events.c.item,
                predictions.c.seq,
                label_events.c.source,
                label_events.c.label,
                predictions.c.label.label("prediction"),
            )
            .join(
                predictions,
                _of_prediction(label_events),
            )
            .where(predictions.c.seq > after)
            .order_by(label_events.c.id)
        )
        if through is not None:
            query = query.where(label_events.c.id <= through)
        with self.database.read() as connection:
            frame = pd.DataFrame(connection.execute(query).mappings().all())
        columns = ["id", "request_id", "item", "seq", "source", "label", "prediction"]
        if frame.empty:
            return pd.DataFrame(columns=columns)
        return frame[columns]

    def reviewed(
        self,
        after: int,
        reviewers: tuple[str, ...],
        *,
        records: bool = False,
        through: int | None = None,
    ):
        """The items numbered after ``after`` that a reviewer labelled, as :meth:`labelled`
        gives them, with the reviewer's label (the latest, where several reviewed one)."""
        labels = self.by_source(after, through)
        labels = labels[labels["source"].isin(reviewers)]
        labels = labels.drop_duplicates(["request_id", "item"], keep="last")
        if labels.empty:
            return pd.DataFrame(columns=LABELLED)
        truth = {
            (r, i): (lb, s)
            for r, i, lb, s in labels[["request_id", "item", "label", "source"]].itertuples(
                index=False
            )
        }
        everything = FeedbackStore(self.database, "first").labelled(
            after, records=records, through=through
        )
        keys = list(zip(everything["request_id"], everything["item"], strict=True))
        frame = everything[[k in truth for k in keys]].copy()
        chosen = [truth[k] for k in zip(frame["request_id"], frame["item"], strict=True)]
        frame["label"] = [c[0] for c in chosen]
        frame["source"] = [c[1] for c in chosen]
        return frame.reset_index(drop=True)


def _of_prediction(table):
    """The join of a label table's rows to the predictions they label."""
    return (table.c.request_id == predictions.c.request_id) & (table.c.item == predictions.c.item)
