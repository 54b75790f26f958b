"""Labels as they arrive: a ``POST /feedback`` body or a ``loopline feedback`` CSV, checked
under the same rules as a prediction request, and against the model's classes, before
anything reaches the store (:mod:`loopline.storage.feedback`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.serving.requests import JSON, Limits, RequestError, read_json

if TYPE_CHECKING:
    from loopline.storage.feedback import Label

MAX_LABELS = 10_000
MAX_ITEM = 2**31 - 1  # the store's item column; a request holds far fewer instances


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
    # Imported here: the server's arbiter imports this module for MAX_ITEM and has no use
    # for the store (SQLAlchemy and pandas, 0.5 s of CPU).
    from loopline.storage.feedback import Label

    if not isinstance(entry, dict):
        raise RequestError(422, f"{where} must be an object with request_id and label")
    unknown = sorted(set(entry) - {"request_id", "item", "label"})
    if unknown:
        raise RequestError(422, f"{where}: unknown field(s) {', '.join(unknown)}")
    request_id, item, label = entry.get("request_id"), entry.get("item", 0), entry.get("label")
    if not isinstance(request_id, str) or not request_id:
        raise RequestError(422, f"{where}.request_id must be the request id of a prediction")
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_ITEM:
        raise RequestError(422, f"{where}.item must be the instance's position (0, 1, ...)")
    if isinstance(label, float) and not math.isfinite(label):
        label = ""  # refused below
    if isinstance(label, bool) or not isinstance(label, str | int | float) or str(label) == "":
        raise RequestError(
            422, f'{where}.label must be a class name, e.g. "3" (a regressor\'s: its number)'
        )
    return Label(request_id, item, str(label))


def check_classes(labels: list[Label], classes: list[str] | None) -> None:
    """A label that is not a class of the model refuses the whole set (None: no model)."""
    if classes is None:
        return
    bad = [lb for lb in labels if lb.label not in classes]
    if bad:
        raise RequestError(
            422,
            f"label {bad[0].label!r} (request {bad[0].request_id}) is not a class of the "
            f"model; expected one of {classes}; nothing was stored",
        )
