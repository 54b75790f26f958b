"""A named-column model's rows in the prediction log, and a regressor's errors from
feedback, on SQLite and PostgreSQL alike (the ``database`` fixture runs both)."""

from __future__ import annotations

import json

import numpy as np

from loopline.storage.feedback import FeedbackStore, Label
from loopline.storage.predictions import Answer, PredictionLog, decode_records


def answer(request_id: str, rows: list[dict], values: list[float]) -> Answer:
    inputs = [json.dumps(r, separators=(",", ":")).encode() for r in rows]
    return Answer(request_id, "1", inputs, [repr(v) for v in values], np.zeros((len(rows), 0)))


def test_rows_are_logged_as_sent_replayed_by_digest_and_errors_computed_in_the_database(
    database,
):
    log = PredictionLog(database)
    try:
        rows = [{"plan": "gold", "age": 41.5}, {"plan": 'é"quoted"', "age": -1.0}]
        assert log.append(answer("a", rows, [10.0, 20.0])).outcome == "new"
        assert log.append(answer("a", rows, [10.0, 20.0])).outcome == "replay"
        conflict = log.append(answer("a", rows[:1], [10.0]))
        assert conflict.outcome == "conflict"
        assert log.append(answer("b", [{"plan": "x", "age": 0.0}], [5.0])).outcome == "new"
        window = log.read_window(records=True)
        assert decode_records(window["inputs"]) == [*rows, {"plan": "x", "age": 0.0}]
        sampled = log.sample_window(0, 3, 2, records=True, seed=1)
        assert all(isinstance(json.loads(b), dict) for b in sampled["inputs"])
    finally:
        log.close()
    feedback = FeedbackStore(database)
    feedback.attach([Label("a", 0, "13.0"), Label("a", 1, "16.0"), Label("b", 0, "5.0")])
    count, mae, rmse = feedback.errors()
    assert count == 3
    assert np.isclose(mae, (3 + 4 + 0) / 3) and np.isclose(rmse, np.sqrt((9 + 16) / 3))
    assert feedback.errors(after=3) == (0, None, None)
    labelled = feedback.labelled(records=True)
    assert decode_records(labelled["inputs"])[1] == rows[1]
