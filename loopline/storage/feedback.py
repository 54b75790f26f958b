"""Ground truth for served predictions: labels attached by request id (and item).

Labels live beside the prediction log, in the platform's database, so monitoring joins
them without a second store. Bodies and files of labels are read and checked in
:mod:`loopline.serving.labels`. A label for a prediction that was never logged is reported,
not stored, and a corrected label replaces the earlier one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Float, case, cast, func, select, tuple_

from loopline.storage.database import Database
from loopline.storage.tables import feedback, predictions


@dataclass(frozen=True)
class Label:
    request_id: str
    item: int
    label: str


class FeedbackStore:
    def __init__(self, database: Database):
        self.database = database

    def attach(self, labels: list[Label]) -> dict:
        """Store labels of logged predictions; return counts and the labels whose
        prediction was never logged (reported, not stored)."""

        now = time.time()
        wanted = sorted({(lb.request_id, lb.item) for lb in labels})
        with self.database.write() as connection:
            known = set()
            for chunk in range(0, len(wanted), 500):
                part = wanted[chunk : chunk + 500]
                known.update(
                    tuple(row)
                    for row in connection.execute(
                        select(predictions.c.request_id, predictions.c.item).where(
                            tuple_(predictions.c.request_id, predictions.c.item).in_(part)
                        )
                    )
                )
            latest = {
                (lb.request_id, lb.item): lb for lb in labels if (lb.request_id, lb.item) in known
            }
            if latest:  # a corrected label replaces the earlier one
                connection.execute(
                    self.database.upsert(feedback, ["request_id", "item"], ["label", "ts"]),
                    [
                        {"request_id": r, "item": i, "label": lb.label, "ts": now}
                        for (r, i), lb in latest.items()
                    ],
                )
        unknown = [
            f"{lb.request_id}#{lb.item}" for lb in labels if (lb.request_id, lb.item) not in known
        ]
        return {"stored": len(latest), "unknown": unknown[:20], "unknown_count": len(unknown)}

    def errors(
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ) -> tuple[int, float | None, float | None]:
        """A regressor's labelled predictions numbered ``after < seq <= upto``: how many,
        their mean absolute error and root mean squared error, computed in the database."""
        difference = cast(predictions.c.label, Float) - cast(feedback.c.label, Float)
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
        right = func.coalesce(
            func.sum(case((predictions.c.label == feedback.c.label, 1), else_=0)), 0
        )
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
                    (feedback.c.request_id == predictions.c.request_id)
                    & (feedback.c.item == predictions.c.item),
                )
            )
            .where(predictions.c.seq > after)
        )
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.database.read() as connection:
            return tuple(connection.execute(query).one())

    def labelled(
        self, after: int = 0, upto: int | None = None, *, records: bool = False
    ) -> pd.DataFrame:
        """Logged predictions numbered ``after < seq <= upto`` that have a label, with
        their inputs (decoded; with ``records``, a named-column model's rows as logged),
        the served label (``prediction``) and the true ``label``."""

        query = (
            select(
                predictions.c.seq,
                predictions.c.request_id,
                predictions.c.item,
                predictions.c.ts,
                predictions.c.model_version,
                predictions.c.inputs,
                predictions.c.label.label("prediction"),
                feedback.c.label,
            )
            .join(
                feedback,
                (feedback.c.request_id == predictions.c.request_id)
                & (feedback.c.item == predictions.c.item),
            )
            .where(predictions.c.seq > after)
            .order_by(predictions.c.seq)
        )
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        with self.database.read() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
        frame = pd.DataFrame(
            rows,
            columns=[
                "seq",
                "request_id",
                "item",
                "ts",
                "model_version",
                "inputs",
                "prediction",
                "label",
            ],
        )
        frame["inputs"] = [
            bytes(b) if records else np.frombuffer(b, dtype=np.float32) for b in frame["inputs"]
        ]
        return frame
