"""The prediction log: every served answer recorded exactly once, durably, cheaply.

Writers hand whole requests to a background thread that commits them in batches (group
commit) and wakes each writer once its batch is durable. A handler that waits for that
before answering never answers for a prediction the log could lose, even if the process
is killed right after, while one commit covers many concurrent requests. The thread
commits as soon as it has work, and whatever arrives while a commit runs goes into the
next one: a lone request pays for one commit and no waiting.

Request ids are unique. A reused id with the same inputs is an idempotent retry: the
stored answer is replayed and nothing is logged twice. A reused id with other inputs is
a conflict (the service answers 409). Either way every answer a client saw is in the
log, with the inputs and outputs it was given.

Rows are numbered in commit order (``seq``, see :mod:`loopline.storage.tables`), so monitoring
reads windows by number, not by clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from loopline.core.errors import LooplineError
from loopline.storage.database import Database
from loopline.storage.tables import predictions

COUNTER = "predictions"
SAMPLE_CHUNK = 1000  # numbers per IN (...) query: well under SQLite's variable limit
# SQLite's write path: the claim of a batch's request ids, then its rows.
CLAIM = (
    "INSERT INTO requests (request_id, ts, model_version, digest, items) VALUES %s"
    " ON CONFLICT DO NOTHING RETURNING request_id"
)
NAMES = [c.name for c in predictions.c]
COLUMNS = ", ".join(NAMES)
INSERT = (
    "INSERT INTO predictions (seq, request_id, item, ts, model_version, inputs, label,"
    " probabilities) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# PostgreSQL's write path: CLAIM, the counter and INSERT in one statement over arrays.
# The new rows are numbered in batch order after the counter's value, whose row stays
# locked until the statement commits: numbers in commit order, as on SQLite.
STORE_COUNTER = "INSERT INTO counters (name, value) VALUES (%s, 0) ON CONFLICT DO NOTHING"
STORE_POSTGRES = """
WITH claimed AS (
  INSERT INTO requests (request_id, ts, model_version, digest, items)
  SELECT b.request_id, %(now)s, b.model_version, b.digest, b.items
  FROM unnest(%(ids)s::text[], %(versions)s::text[], %(digests)s::text[], %(counts)s::int[])
    WITH ORDINALITY AS b(request_id, model_version, digest, items, position)
  ORDER BY b.position
  ON CONFLICT DO NOTHING RETURNING request_id
), fresh AS (
  SELECT r.request_id, r.item, r.model_version, r.inputs, r.label, r.probabilities,
    row_number() OVER (ORDER BY r.position) AS n
  FROM unnest(%(row_ids)s::text[], %(items)s::int[], %(row_versions)s::text[],
    %(inputs)s::bytea[], %(labels)s::text[], %(probabilities)s::bytea[])
    WITH ORDINALITY AS r(request_id, item, model_version, inputs, label, probabilities, position)
  WHERE r.request_id IN (SELECT request_id FROM claimed)
), counter AS (
  UPDATE counters SET value = value + (SELECT count(*) FROM fresh)
  WHERE name = %(counter)s RETURNING value
), inserted AS (
  INSERT INTO predictions (seq, request_id, item, ts, model_version, inputs, label,
    probabilities)
  SELECT counter.value - (SELECT count(*) FROM fresh) + fresh.n, fresh.request_id, fresh.item,
    %(now)s, fresh.model_version, fresh.inputs, fresh.label, fresh.probabilities
  FROM fresh LEFT JOIN counter ON true  -- no counter row: a NULL seq fails the statement
)
SELECT request_id FROM claimed
"""


@dataclass(frozen=True)
class Answer:
    """One request and what it was answered with: one label and one probability vector
    per input row (empty for a model without probabilities)."""

    request_id: str
    model_version: str
    # (rows, features) float32 for loopline's own models; for a model with named columns,
    # each row as sent: one JSON object (UTF-8), which the monitor reads back by type.
    inputs: np.ndarray | list[bytes]
    labels: list[str]
    probabilities: np.ndarray  # (rows, classes) float64

    @property
    def digest(self) -> str:
        return digest(self.inputs)


def digest(inputs: np.ndarray | list[bytes]) -> str:
    if isinstance(inputs, list):
        return hashlib.sha256(b"\n".join(inputs)).hexdigest()
    rows = np.ascontiguousarray(inputs, dtype=np.float32)
    return hashlib.sha256(str(rows.shape).encode() + rows.tobytes()).hexdigest()


def decode_records(blobs) -> list[dict]:
    """Logged rows of a model with named columns, as column -> value."""
    return [json.loads(b) for b in blobs]


class ConnectionLost(LooplineError, RuntimeError):
    """The writer's database connection ended (a restart, an idle timeout)."""


@dataclass(frozen=True)
class Logged:
    """How the log took an answer: ``new``, a ``replay`` of the stored answer for the same
    id and inputs, or a ``conflict`` (the id was used with other inputs)."""

    outcome: str
    stored: Answer | None = None


class PredictionLog:
    def __init__(self, database: Database, *, max_batch_rows: int = 4096):
        self.database = database
        self.max_batch_rows = max_batch_rows
        self._queue: queue.Queue[tuple[Answer, Future | asyncio.Future] | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None  # started by the first write
        self._connection = None  # the writer's own driver connection, opened on first use

    def append(self, answer: Answer, timeout: float = 30) -> Logged:
        """Return once ``answer`` is durable (or known to be a replay or a conflict)."""
        return self.submit(answer).result(timeout=timeout)

    def submit(self, answer: Answer) -> Future:
        """Queue ``answer``; the future gives a :class:`Logged` once it is durable."""
        done: Future = Future()
        self._put(answer, done)
        return done

    async def record(self, answer: Answer) -> Logged:
        """:meth:`append` for an event loop: the writer wakes the loop once per commit,
        for every request of it, rather than once per request."""
        done = asyncio.get_running_loop().create_future()
        self._put(answer, done)
        return await done

    def _put(self, answer: Answer, done: Future | asyncio.Future) -> None:
        if self._closed:
            raise RuntimeError("the prediction log is closed")
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="prediction-log", daemon=True
                )
                self._writer.start()
        self._queue.put((answer, done))

    def close(self) -> None:
        """Commit everything queued, then stop the writer (call on shutdown)."""
        if not self._closed:
            self._closed = True
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()
            self._drop_connection()

    def lookup(self, request_id: str) -> Answer | None:
        """The stored answer for ``request_id``, if any."""
        with self.database.read() as connection:
            cursor = connection.connection.cursor()
            try:
                return self._stored(cursor, request_id)
            finally:
                cursor.close()

    def count(self) -> int:

        with self.database.read() as connection:
            return connection.execute(select(func.count()).select_from(predictions)).scalar()

    def last_seq(self) -> int:
        """The number of the newest committed prediction (0 when there is none)."""

        with self.database.read() as connection:
            return connection.execute(select(func.max(predictions.c.seq))).scalar() or 0

    def count_window(self, after: int, upto: int, *, model_version: str | None = None) -> int:

        query = (
            select(func.count())
            .select_from(predictions)
            .where(predictions.c.seq > after, predictions.c.seq <= upto)
        )
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.database.read() as connection:
            return connection.execute(query).scalar()

    def read_window(
        self,
        after: int = 0,
        upto: int | None = None,
        *,
        model_version: str | None = None,
        records: bool = False,
    ):
        """Predictions numbered ``after < seq <= upto``, oldest first, inputs decoded."""

        query = select(predictions).where(predictions.c.seq > after).order_by(predictions.c.seq)
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.database.read() as connection:
            return _frame(connection.execute(query).all(), records=records)

    def sample_window(
        self,
        after: int,
        upto: int,
        size: int,
        *,
        model_version: str | None = None,
        seed: int = 0,
        records: bool = False,
    ):
        """About ``size`` predictions numbered ``after < seq <= upto``, drawn uniformly by
        number, oldest first. Only the drawn rows are read, so a pass costs the same for a
        window of any length. Drawn numbers of another model version are not kept: the
        caller draws more where the window mixes versions."""
        if upto - after <= size:
            return self.read_window(after, upto, model_version=model_version, records=records)
        drawn = np.random.default_rng(seed).choice(upto - after, size, replace=False)
        numbers = np.sort(drawn) + after + 1
        version = "" if model_version is None else " AND model_version = ?"
        rows = []
        with self.database.read() as connection:  # the driver's cursor: see _write
            cursor = connection.connection.cursor()
            for chunk in np.array_split(numbers, -(-size // SAMPLE_CHUNK)):
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    self.database.driver_sql(
                        f"SELECT {COLUMNS} FROM predictions WHERE seq IN ({marks}){version}"
                        " ORDER BY seq"
                    ),
                    [*chunk.tolist(), *([model_version] if version else [])],
                )
                rows += cursor.fetchall()
            cursor.close()
        return _frame(rows, records=records)

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._commit(batch)
            if stop:
                return

    def _gather(self, first) -> tuple[list, bool]:
        """The first answer plus whatever is already waiting, up to a batch."""
        batch, rows = [first], len(first[0].inputs)
        while rows < self.max_batch_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            rows += len(item[0].inputs)
        return batch, False

    def _commit(self, batch: list[tuple[Answer, Future | asyncio.Future]]) -> None:
        try:
            try:
                outcomes = self._write([answer for answer, _ in batch])
            except ConnectionLost:
                # The database restarted, or dropped an idle connection: once more on a
                # new one. A batch whose commit was lost on the way is found again by its
                # request ids, and replayed rather than logged twice.
                outcomes = self._write([answer for answer, _ in batch])
        except Exception as exc:  # nothing of the batch is durable: every writer hears it
            _settle([(done, exc) for _, done in batch])
            return
        _settle([(done, outcome) for (_, done), outcome in zip(batch, outcomes, strict=True)])

    def _write(self, answers) -> list[Logged]:
        """One transaction for the batch: claim every request id, insert the rows of the
        new ones, and say how each answer was taken.

        It runs on a driver connection of its own, with the SQL written out: building the
        statements and the transaction in SQLAlchemy cost more CPU than the rest of a
        request's logging (benchmarks/README.md). A connection that fails is dropped."""
        answers = list(answers)
        now = time.time()
        first = {}  # request id -> the batch's first answer with it: the one that may claim
        for answer in answers:
            first.setdefault(answer.request_id, answer)
        try:
            connection = self._open()
            if self.database.dialect == "postgresql":
                claimed = self._store_in_one_statement(connection, first, now)
            else:
                claimed = self._store(connection, first, now)
            cursor = connection.cursor()  # replays and conflicts read what is stored
            try:
                return [self._outcome(a, first, claimed, cursor) for a in answers]
            finally:
                cursor.close()
        except Exception as exc:
            dialect = self.database.engine.dialect
            driver = self._connection.dbapi_connection if self._connection else None
            lost = isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
                exc, driver, None
            )
            self._drop_connection()
            if lost:
                raise ConnectionLost(str(exc)) from exc
            raise

    def _open(self):
        """The writer's own driver connection, opened on first use. On PostgreSQL it
        commits each statement by itself (see :meth:`_store_in_one_statement`)."""
        if self._connection is None:
            self._connection = self.database.engine.raw_connection()
            if self.database.dialect == "postgresql":
                driver = self._connection.dbapi_connection
                driver.rollback()  # the pool's liveness check may have begun a transaction
                driver.autocommit = True
                driver.execute(STORE_COUNTER, (COUNTER,))
        return self._connection

    def _store(self, connection, first: dict[str, Answer], now: float) -> set[str]:
        """SQLite's write: claim the ids in one statement and insert the new rows in
        another, in one write transaction; the ids claimed. In-process statements cost next
        to nothing."""
        with self.database.driver_write(connection) as cursor:
            cursor.execute(*self._claim(first, now))
            claimed = {row[0] for row in cursor.fetchall()}
            rows = [row for id_, a in first.items() if id_ in claimed for row in _rows(a, now)]
            if rows:
                number = self.database.take_numbers(cursor, COUNTER, len(rows))
                cursor.executemany(INSERT, [(number + i, *row) for i, row in enumerate(rows)])
        return claimed

    def _store_in_one_statement(self, connection, first: dict[str, Answer], now: float):
        """:meth:`_store` as one PostgreSQL statement that is its own transaction: one round
        trip to the server where the statements of :meth:`_store` cost five (BEGIN, claim,
        counter, insert, COMMIT), and a third less CPU on both sides (benchmarks/README.md)."""
        rows = [row for answer in first.values() for row in _rows(answer, now)]
        columns = list(zip(*rows, strict=True)) if rows else [()] * 7
        cursor = connection.cursor()
        try:
            cursor.execute(
                STORE_POSTGRES,
                {
                    "now": now,
                    "counter": COUNTER,
                    "ids": list(first),
                    "versions": [a.model_version for a in first.values()],
                    "digests": [a.digest for a in first.values()],
                    "counts": [len(a.inputs) for a in first.values()],
                    "row_ids": list(columns[0]),
                    "items": list(columns[1]),
                    "row_versions": list(columns[3]),
                    "inputs": list(columns[4]),
                    "labels": list(columns[5]),
                    "probabilities": list(columns[6]),
                },
                prepare=True,  # the server plans it once per connection
            )
            return {row[0] for row in cursor.fetchall()}
        finally:
            cursor.close()

    def _claim(self, first: dict[str, Answer], now: float) -> tuple[str, list]:
        """The statement that claims the batch's request ids and returns those it took."""
        values = ", ".join(["(?, ?, ?, ?, ?)"] * len(first))
        return CLAIM % values, [
            v
            for a in first.values()
            for v in (a.request_id, now, a.model_version, a.digest, len(a.inputs))
        ]

    def _outcome(self, answer: Answer, first: dict[str, Answer], claimed, cursor) -> Logged:
        """How ``answer`` was taken, given the ids its batch ``claimed``."""
        if answer.request_id in claimed:
            if first[answer.request_id] is answer:
                return Logged("new")
            stored = first[answer.request_id]  # the same id earlier in the batch
        else:
            stored = self._stored(
                cursor, answer.request_id, records=isinstance(answer.inputs, list)
            )
        same = stored is not None and stored.digest == answer.digest
        return Logged("replay" if same else "conflict", stored)

    def _stored(self, cursor, request_id: str, *, records: bool = False) -> Answer | None:
        cursor.execute(
            self.database.driver_sql(
                f"SELECT {COLUMNS} FROM predictions WHERE request_id = ? ORDER BY item"
            ),
            (request_id,),
        )
        found = [dict(zip(NAMES, row, strict=True)) for row in cursor.fetchall()]
        if not found:
            return None
        return Answer(
            request_id,
            found[0]["model_version"],
            [bytes(r["inputs"]) for r in found]
            if records
            else np.stack([np.frombuffer(r["inputs"], dtype=np.float32) for r in found]),
            [r["label"] for r in found],
            np.stack([np.frombuffer(r["probabilities"], dtype=np.float64) for r in found]),
        )

    def _drop_connection(self) -> None:
        """Close the writer's connection for good: it may be broken, and PostgreSQL's is in
        autocommit mode, which no other user of the pool expects."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.invalidate()
            self._connection = None


def _settle(results: list[tuple[Future | asyncio.Future, Logged | Exception]]) -> None:
    """Hand each waiter its outcome: thread futures at once, and the futures of each
    event loop in one call on that loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for done, result in results:
        if isinstance(done, asyncio.Future):
            by_loop.setdefault(done.get_loop(), []).append((done, result))
        elif isinstance(result, Exception):
            done.set_exception(result)
        else:
            done.set_result(result)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has no one waiting
            loop.call_soon_threadsafe(_settle_on_loop, settled)


def _settle_on_loop(settled: list) -> None:
    for done, result in settled:
        if done.done():  # its request was cancelled (the client went away)
            continue
        if isinstance(result, Exception):
            done.set_exception(result)
        else:
            done.set_result(result)


def _frame(rows, *, records: bool = False):
    """Rows of ``predictions`` (tuples, in the table's column order) as a frame; inputs as
    float arrays, or with ``records`` as the logged bytes (see :func:`decode_records`)."""
    import pandas as pd

    frame = pd.DataFrame([tuple(r) for r in rows], columns=NAMES)
    frame["inputs"] = [
        bytes(b) if records else np.frombuffer(b, dtype=np.float32) for b in frame["inputs"]
    ]
    frame["probabilities"] = [np.frombuffer(b, dtype=np.float64) for b in frame["probabilities"]]
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


def _rows(answer: Answer, now: float) -> list[tuple]:
    """The answer's rows for :data:`INSERT`, without their numbers."""
    inputs = (
        answer.inputs
        if isinstance(answer.inputs, list)
        else np.ascontiguousarray(answer.inputs, dtype=np.float32)
    )
    probabilities = np.ascontiguousarray(answer.probabilities, dtype=np.float64)
    return [
        (
            answer.request_id,
            item,
            now,
            answer.model_version,
            inputs[item] if isinstance(inputs, list) else inputs[item].tobytes(),
            label,
            probabilities[item].tobytes(),
        )
        for item, label in enumerate(answer.labels)
    ]
