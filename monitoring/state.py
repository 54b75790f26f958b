"""What monitoring remembers: every check, and retraining triggers with their life cycle.

SQLite under ``LOOPLINE_HOME/monitoring``. A trigger is keyed by (model, version, window
start): concurrent or repeated drift events for the same window insert one row, and only
the caller whose insert (or whose ``pending -> running`` claim) succeeds starts a run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    rows INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    window_start REAL NOT NULL,
    reasons TEXT NOT NULL,
    report TEXT NOT NULL,
    state TEXT NOT NULL,  -- pending, running, promoted, refused, failed
    created REAL NOT NULL,
    updated REAL NOT NULL,
    result TEXT,
    UNIQUE (model_name, model_version, window_start)
);
"""


@dataclass(frozen=True)
class Trigger:
    id: int
    model_name: str
    model_version: str
    window_start: float
    reasons: list[str]
    report: str
    state: str
    created: float
    updated: float
    result: dict | None


class MonitorState:
    def __init__(self, folder: Path, *, create: bool = True):
        self.path = folder / "state.db"
        self.read_only = not create
        if create:
            folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)

    @classmethod
    def existing(cls, folder: Path) -> MonitorState | None:
        """The state for reading only, or None when monitoring never ran (nothing is created)."""
        return cls(folder, create=False) if (folder / "state.db").exists() else None

    def last_check(self, model_name: str) -> dict | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT ts, model_version, window_start, window_end, rows, verdict, summary"
                " FROM checks WHERE model_name = ? ORDER BY id DESC LIMIT 1",
                (model_name,),
            ).fetchone()
        if row is None:
            return None
        keys = ("ts", "model_version", "window_start", "window_end", "rows", "verdict")
        return {**dict(zip(keys, row[:6], strict=True)), "summary": json.loads(row[6])}

    def record_check(
        self,
        model_name: str,
        version: str,
        start: float,
        end: float,
        rows: int,
        verdict: str,
        summary: dict,
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO checks (ts, model_name, model_version, window_start, window_end,"
                " rows, verdict, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), model_name, version, start, end, rows, verdict, json.dumps(summary)),
            )

    def add_trigger(
        self, model_name: str, version: str, window_start: float, reasons: list[str], report: str
    ) -> Trigger | None:
        """The new pending trigger, or None when this window already has one."""
        now = time.time()
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO triggers (model_name, model_version, window_start, reasons,"
                " report, state, created, updated) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (model_name, version, window_start, json.dumps(reasons), report, now, now),
            )
            new_id = cursor.lastrowid if cursor.rowcount == 1 else None
        return self.trigger(new_id) if new_id is not None else None

    def claim(self, trigger_id: int) -> bool:
        """Move a pending trigger to running; exactly one caller gets True."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE triggers SET state = 'running', updated = ? WHERE id = ? AND state = 'pending'",
                (time.time(), trigger_id),
            )
            return cursor.rowcount == 1

    def finish(self, trigger_id: int, state: str, result: dict) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE triggers SET state = ?, updated = ?, result = ? WHERE id = ?",
                (state, time.time(), json.dumps(result), trigger_id),
            )

    def trigger(self, trigger_id: int) -> Trigger | None:
        found = self._triggers("id = ?", (trigger_id,))
        return found[0] if found else None

    def triggers(self, model_name: str, state: str | None = None) -> list[Trigger]:
        if state is None:
            return self._triggers("model_name = ?", (model_name,))
        return self._triggers("model_name = ? AND state = ?", (model_name, state))

    def last_started(self, model_name: str) -> float | None:
        """When the model's latest retraining started (for the cooldown)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT MAX(updated) FROM triggers WHERE model_name = ? AND state != 'pending'",
                (model_name,),
            ).fetchone()
        return row[0]

    def _triggers(self, where: str, params: tuple) -> list[Trigger]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, model_name, model_version, window_start, reasons, report, state,"
                f" created, updated, result FROM triggers WHERE {where} ORDER BY id",
                params,
            ).fetchall()
        return [
            Trigger(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8],
                    json.loads(r[9]) if r[9] else None)
            for r in rows
        ]  # fmt: skip

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit
        db.execute("PRAGMA journal_mode=WAL")
        return db
