"""The prediction log: every served prediction recorded exactly once, durably, cheaply.

Embedded default: one SQLite database in WAL mode under ``LOOPLINE_HOME/predictions``.
Writers hand records to a background thread that commits them in batches (group commit)
and wakes each writer once its batch is on disk. A handler that waits for ``append``
before answering therefore never answers for a prediction the log could lose, even if
the process is killed right after, while one commit (and one fsync) covers many
concurrent requests. ``(request_id, item)`` is the primary key, so a retried write is
stored once.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    item INTEGER NOT NULL,
    ts REAL NOT NULL,
    model_version TEXT NOT NULL,
    inputs TEXT NOT NULL,
    label TEXT NOT NULL,
    probabilities TEXT NOT NULL,
    PRIMARY KEY (request_id, item)
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
"""


@dataclass(frozen=True)
class Prediction:
    request_id: str
    item: int  # position of the instance in its request
    model_version: str
    inputs: list | dict
    label: str
    probabilities: list[float]
    ts: float | None = None  # seconds since the epoch; now when omitted


class PredictionLog:
    """Append predictions durably from many threads; read time windows as DataFrames."""

    def __init__(self, path: Path, *, max_batch: int = 1024, max_wait_s: float = 0.002):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[list[tuple], Future] | None] = queue.Queue()
        self._closed = False
        with self._connect() as db:
            db.executescript(SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="prediction-log", daemon=True)
        self._writer.start()

    def append(self, predictions: Sequence[Prediction], timeout: float = 30) -> None:
        """Return once ``predictions`` are committed to disk."""
        self.submit(predictions).result(timeout=timeout)

    def submit(self, predictions: Sequence[Prediction]) -> Future:
        """Queue ``predictions``; the future completes when they are committed."""
        if self._closed:
            raise RuntimeError("the prediction log is closed")
        done: Future = Future()
        now = time.time()
        rows = [
            (
                p.request_id,
                p.item,
                p.ts if p.ts is not None else now,
                p.model_version,
                json.dumps(p.inputs),
                p.label,
                json.dumps(p.probabilities),
            )
            for p in predictions
        ]
        self._queue.put((rows, done))
        return done

    def close(self) -> None:
        """Commit everything queued, then stop the writer (call on shutdown)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._writer.join()

    def count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    def read_window(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        model_version: str | None = None,
    ) -> pd.DataFrame:
        """Predictions with ``start <= ts < end``, oldest first; inputs and outputs decoded."""
        query = "SELECT * FROM predictions WHERE ts >= ? AND ts < ?"
        params: list = [_seconds(start, 0.0), _seconds(end, float("inf"))]
        if model_version is not None:
            query += " AND model_version = ?"
            params.append(model_version)
        with self._connect() as db:
            frame = pd.read_sql_query(query + " ORDER BY ts, request_id, item", db, params=params)
        frame["inputs"] = frame["inputs"].map(json.loads)
        frame["probabilities"] = frame["probabilities"].map(json.loads)
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        return frame

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
        return db

    def _write_loop(self) -> None:
        db = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch, stop = self._gather(first)
                self._commit(db, batch)
                if stop:
                    self._drain(db)
                    return
        finally:
            db.close()

    def _gather(self, first) -> tuple[list, bool]:
        """The first request plus whatever arrives within ``max_wait_s``, up to a batch."""
        batch, rows = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            rows += len(item[0])
        return batch, False

    def _drain(self, db: sqlite3.Connection) -> None:
        rest = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                rest.append(item)
        if rest:
            self._commit(db, rest)

    def _commit(self, db: sqlite3.Connection, batch: list) -> None:
        try:
            with db:
                db.executemany(
                    "INSERT OR IGNORE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [row for rows, _ in batch for row in rows],
                )
        except sqlite3.Error as exc:
            for _, done in batch:
                done.set_exception(exc)
            return
        for _, done in batch:
            done.set_result(None)


def _seconds(moment: datetime | None, default: float) -> float:
    if moment is None:
        return default
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
