"""Ground truth for served predictions: labels attached by request id (and item).

Labels live beside the prediction log, in the platform's database, so monitoring joins
them without a second store. A label for a prediction that was never logged is reported,
not stored, and a corrected label replaces the earlier one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.serving.requests import JSON, Limits, RequestError, read_json
from loopline.storage.database import Database
from loopline.storage.tables import feedback, predictions

MAX_LABELS = 10_000


@dataclass(frozen=True)
class Label:
    request_id: str
    item: int
    label: str


def parse_labels(
    body: bytes, content_type: str | None = JSON, limits: Limits | None = None
) -> list[Label]:
    """``{"labels": [{"request_id": ..., "item": 0, "label": ...}, ...]}`` as Labels,
    under the same rules as a prediction request (content type, size, nesting, fields)."""
    example = '{"labels": [{"request_id": ..., "label": ...}]}'
    payload = read_json(body, content_type, limits or Limits(), example=example)
    if not isinstance(payload, dict) or not isinstance(payload.get("labels"), list):
        raise RequestError(422, f"body must be {example}")
    unknown = sorted(set(payload) - {"labels"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(unknown)}; only 'labels' is accepted")
    entries = payload["labels"]
    if not entries or len(entries) > MAX_LABELS:
        raise RequestError(422, f"labels must hold 1 to {MAX_LABELS} entries")
    return [_label(f"labels[{i}]", entry) for i, entry in enumerate(entries)]


def read_labels_csv(path: Path) -> list[Label]:
    """A ``request_id,label[,item]`` CSV, checked row by row as POST /feedback checks its
    body; the first bad row refuses the whole file (a RequestError naming the line)."""
    import csv

    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RequestError(400, f"cannot read {path}: {exc}") from None
    missing = {"request_id", "label"} - columns
    if missing:
        raise RequestError(
            422,
            f"{path} lacks column(s) {', '.join(sorted(missing))}; expected request_id,label[,item]",
        )
    if not rows or len(rows) > MAX_LABELS:
        raise RequestError(422, f"{path} must hold 1 to {MAX_LABELS} label rows")
    labels = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row:
            raise RequestError(422, f"line {line}: more fields than the header's columns")
        entry = {"request_id": row.get("request_id"), "label": row.get("label")}
        item = (row.get("item") or "").strip()
        if item:  # an empty cell is an item left out, as in a JSON entry without one
            entry["item"] = int(item) if item.isdigit() else item
        labels.append(_label(f"line {line}", entry))
    return labels


def _label(where: str, entry: Any) -> Label:
    if not isinstance(entry, dict):
        raise RequestError(422, f"{where} must be an object with request_id and label")
    unknown = sorted(set(entry) - {"request_id", "item", "label"})
    if unknown:
        raise RequestError(422, f"{where}: unknown field(s) {', '.join(unknown)}")
    request_id, item, label = entry.get("request_id"), entry.get("item", 0), entry.get("label")
    if not isinstance(request_id, str) or not request_id:
        raise RequestError(422, f"{where}.request_id must be the request id of a prediction")
    if isinstance(item, bool) or not isinstance(item, int) or item < 0:
        raise RequestError(422, f"{where}.item must be the instance's position (0, 1, ...)")
    if isinstance(label, bool) or not isinstance(label, str | int) or str(label) == "":
        raise RequestError(422, f'{where}.label must be a class name, e.g. "3"')
    return Label(request_id, item, str(label))


class FeedbackStore:
    def __init__(self, database: Database):
        self.database = database

    def attach(self, labels: list[Label], classes: list[str] | None = None) -> dict:
        """Store labels of logged predictions; return counts and what was refused. A label
        that is not a class refuses the whole set: nothing is stored."""
        from sqlalchemy import select, tuple_

        if classes is not None:
            bad = [lb for lb in labels if lb.label not in classes]
            if bad:
                raise RequestError(
                    422,
                    f"label {bad[0].label!r} (request {bad[0].request_id}) is not a class of the "
                    f"model; expected one of {classes}; nothing was stored",
                )
        now = time.time()
        wanted = sorted({(lb.request_id, lb.item) for lb in labels})
        with self.database.write() as connection:
            known = set()
            for chunk in range(0, len(wanted), 500):
                part = wanted[chunk : chunk + 500]
                known.update(
                    tuple(row) for row in connection.execute(
                        select(predictions.c.request_id, predictions.c.item).where(
                            tuple_(predictions.c.request_id, predictions.c.item).in_(part)
                        )
                    )
                )  # fmt: skip
            latest = {
                (lb.request_id, lb.item): lb for lb in labels if (lb.request_id, lb.item) in known
            }
            if latest:  # a corrected label replaces the earlier one
                connection.execute(
                    self.database.upsert(feedback, ["request_id", "item"], ["label", "ts"]),
                    [{"request_id": r, "item": i, "label": lb.label, "ts": now}
                     for (r, i), lb in latest.items()],
                )  # fmt: skip
        unknown = [
            f"{lb.request_id}#{lb.item}" for lb in labels if (lb.request_id, lb.item) not in known
        ]
        return {"stored": len(latest), "unknown": unknown[:20], "unknown_count": len(unknown)}

    def accuracy(
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ) -> tuple[int, int]:
        """How many predictions numbered ``after < seq <= upto`` have a label, and how many
        of those were right: counted in the database, whatever the window's length."""
        from sqlalchemy import case, func, select

        right = func.coalesce(
            func.sum(case((predictions.c.label == feedback.c.label, 1), else_=0)), 0
        )
        query = select(func.count(), right).select_from(
            feedback.join(predictions, (feedback.c.request_id == predictions.c.request_id)
                          & (feedback.c.item == predictions.c.item))
        ).where(predictions.c.seq > after)  # fmt: skip
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.database.read() as connection:
            rows, correct = connection.execute(query).one()
        return int(rows), int(correct)

    def labelled(self, after: int = 0, upto: int | None = None) -> pd.DataFrame:
        """Logged predictions numbered ``after < seq <= upto`` that have a label, with
        their inputs (decoded), the served label (``prediction``) and the true ``label``."""
        from sqlalchemy import select

        query = (
            select(
                predictions.c.seq, predictions.c.request_id, predictions.c.item,
                predictions.c.ts, predictions.c.model_version, predictions.c.inputs,
                predictions.c.label.label("prediction"), feedback.c.label,
            )
            .join(feedback, (feedback.c.request_id == predictions.c.request_id)
                  & (feedback.c.item == predictions.c.item))
            .where(predictions.c.seq > after)
            .order_by(predictions.c.seq)
        )  # fmt: skip
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        with self.database.read() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
        frame = pd.DataFrame(rows, columns=[
            "seq", "request_id", "item", "ts", "model_version", "inputs", "prediction", "label",
        ])  # fmt: skip
        frame["inputs"] = [np.frombuffer(b, dtype=np.float32) for b in frame["inputs"]]
        return frame
