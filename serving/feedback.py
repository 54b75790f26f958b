"""Ground truth for served predictions: labels attached by request id (and item).

Labels live beside the prediction log, in the same SQLite database, so monitoring joins
them without a second store. A label for a prediction that was never logged is refused,
and a corrected label replaces the earlier one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from serving.prediction_log import SCHEMA as PREDICTIONS_SCHEMA
from serving.requests import RequestError

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    label TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (request_id, item)
);
"""
MAX_LABELS = 10_000


@dataclass(frozen=True)
class Label:
    request_id: str
    item: int
    label: str


def parse_labels(body: bytes) -> list[Label]:
    """``{"labels": [{"request_id": ..., "item": 0, "label": ...}, ...]}`` as Labels."""
    try:
        payload = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("labels"), list):
        raise RequestError(422, 'body must be {"labels": [{"request_id": ..., "label": ...}]}')
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
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(PREDICTIONS_SCHEMA + SCHEMA)

    def attach(self, labels: list[Label], classes: list[str] | None = None) -> dict:
        """Store labels of logged predictions; return counts and what was refused."""
        if classes is not None:
            bad = [lb for lb in labels if lb.label not in classes]
            if bad:
                raise RequestError(
                    422,
                    f"label {bad[0].label!r} (request {bad[0].request_id}) is not a class of the "
                    f"model; expected one of {classes}; nothing was stored",
                )
        now = time.time()
        request_ids = sorted({lb.request_id for lb in labels})
        with self._connect() as db:
            known = set(
                db.execute(
                    "SELECT request_id, item FROM predictions WHERE request_id IN "
                    f"({','.join('?' * len(request_ids))})",
                    request_ids,
                )
            )
            stored = [lb for lb in labels if (lb.request_id, lb.item) in known]
            db.executemany(
                "INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?)",
                [(lb.request_id, lb.item, lb.label, now) for lb in stored],
            )
        unknown = [
            f"{lb.request_id}#{lb.item}" for lb in labels if (lb.request_id, lb.item) not in known
        ]
        return {"stored": len(stored), "unknown": unknown[:20], "unknown_count": len(unknown)}

    def labelled(self, since: float = 0.0) -> pd.DataFrame:
        """Logged predictions (made at or after ``since``) that have a label."""
        query = (
            "SELECT p.request_id, p.item, p.ts, p.model_version, p.inputs, p.label AS prediction,"
            " f.label AS label FROM predictions p JOIN feedback f"
            " ON p.request_id = f.request_id AND p.item = f.item WHERE p.ts >= ? ORDER BY p.ts"
        )
        with self._connect() as db:
            frame = pd.read_sql_query(query, db, params=[since])
        frame["inputs"] = frame["inputs"].map(json.loads)
        return frame

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db
