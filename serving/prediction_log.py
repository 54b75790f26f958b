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

Rows are numbered in commit order (``seq``, see :mod:`components.tables`), so monitoring
reads windows by number, not by clock.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from components.database import Database
from components.tables import predictions, requests

COUNTER = "predictions"
SAMPLE_CHUNK = 1000  # numbers per IN (...) query: well under SQLite's variable limit


@dataclass(frozen=True)
class Answer:
    """One request and what it was answered with: one label and one probability vector
    per input row."""

    request_id: str
    model_version: str
    inputs: np.ndarray  # (rows, features) float32
    labels: list[str]
    probabilities: np.ndarray  # (rows, classes) float64

    @property
    def digest(self) -> str:
        return digest(self.inputs)


def digest(inputs: np.ndarray) -> str:
    rows = np.ascontiguousarray(inputs, dtype=np.float32)
    return hashlib.sha256(str(rows.shape).encode() + rows.tobytes()).hexdigest()


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
        self._queue: queue.Queue[tuple[Answer, Future] | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None  # started by the first write

    def append(self, answer: Answer, timeout: float = 30) -> Logged:
        """Return once ``answer`` is durable (or known to be a replay or a conflict)."""
        return self.submit(answer).result(timeout=timeout)

    def submit(self, answer: Answer) -> Future:
        """Queue ``answer``; the future gives a :class:`Logged` once it is durable."""
        if self._closed:
            raise RuntimeError("the prediction log is closed")
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="prediction-log", daemon=True
                )
                self._writer.start()
        done: Future = Future()
        self._queue.put((answer, done))
        return done

    def close(self) -> None:
        """Commit everything queued, then stop the writer (call on shutdown)."""
        if not self._closed:
            self._closed = True
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()

    def lookup(self, request_id: str) -> Answer | None:
        """The stored answer for ``request_id``, if any."""
        with self.database.read() as connection:
            return _stored(connection, request_id)

    def count(self) -> int:
        from sqlalchemy import func, select

        with self.database.read() as connection:
            return connection.execute(select(func.count()).select_from(predictions)).scalar()

    def last_seq(self) -> int:
        """The number of the newest committed prediction (0 when there is none)."""
        from sqlalchemy import func, select

        with self.database.read() as connection:
            return connection.execute(select(func.max(predictions.c.seq))).scalar() or 0

    def count_window(self, after: int, upto: int, *, model_version: str | None = None) -> int:
        from sqlalchemy import func, select

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
        self, after: int = 0, upto: int | None = None, *, model_version: str | None = None
    ):
        """Predictions numbered ``after < seq <= upto``, oldest first, inputs decoded."""
        from sqlalchemy import select

        query = select(predictions).where(predictions.c.seq > after).order_by(predictions.c.seq)
        if upto is not None:
            query = query.where(predictions.c.seq <= upto)
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        with self.database.read() as connection:
            return _frame(connection.execute(query).mappings().all())

    def sample_window(
        self, after: int, upto: int, size: int, *, model_version: str | None = None, seed: int = 0
    ):
        """About ``size`` predictions numbered ``after < seq <= upto``, drawn uniformly by
        number, oldest first. Only the drawn rows are read, so a pass costs the same for a
        window of any length. Drawn numbers of another model version are not kept: the
        caller draws more where the window mixes versions."""
        from sqlalchemy import select

        if upto - after <= size:
            return self.read_window(after, upto, model_version=model_version)
        drawn = np.random.default_rng(seed).choice(upto - after, size, replace=False)
        numbers = np.sort(drawn) + after + 1
        rows = []
        with self.database.read() as connection:
            for chunk in np.array_split(numbers, -(-size // SAMPLE_CHUNK)):
                query = select(predictions).where(predictions.c.seq.in_(chunk.tolist()))
                if model_version is not None:
                    query = query.where(predictions.c.model_version == model_version)
                rows += connection.execute(query.order_by(predictions.c.seq)).mappings().all()
        return _frame(rows)

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

    def _commit(self, batch: list[tuple[Answer, Future]]) -> None:
        try:
            outcomes = self._write(answer for answer, _ in batch)
        except Exception as exc:  # nothing of the batch is durable: every writer hears it
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            done.set_result(outcome)

    def _write(self, answers) -> list[Logged]:
        outcomes, rows, new = [], [], {}
        now = time.time()
        with self.database.write() as connection:
            claim = self.database.insert_ignoring_conflicts(requests)
            for answer in answers:
                taken = connection.execute(claim.values(
                    request_id=answer.request_id, ts=now, model_version=answer.model_version,
                    digest=answer.digest, items=len(answer.inputs),
                ).returning(requests.c.request_id)).first()  # fmt: skip
                if taken is not None:
                    outcomes.append(Logged("new"))
                    rows += _rows(answer, now)
                    new[answer.request_id] = answer
                    continue
                stored = new.get(answer.request_id) or _stored(connection, answer.request_id)
                same = stored is not None and stored.digest == answer.digest
                outcomes.append(Logged("replay" if same else "conflict", stored))
            if rows:
                first = self.database.take_numbers(connection, COUNTER, len(rows))
                for offset, row in enumerate(rows):
                    row["seq"] = first + offset
                connection.execute(predictions.insert(), rows)
        return outcomes


def _frame(rows):
    import pandas as pd

    frame = pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in predictions.c])
    frame["inputs"] = [np.frombuffer(b, dtype=np.float32) for b in frame["inputs"]]
    frame["probabilities"] = [np.frombuffer(b, dtype=np.float64) for b in frame["probabilities"]]
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


def _rows(answer: Answer, now: float) -> list[dict]:
    inputs = np.ascontiguousarray(answer.inputs, dtype=np.float32)
    probabilities = np.ascontiguousarray(answer.probabilities, dtype=np.float64)
    return [
        {
            "request_id": answer.request_id,
            "item": item,
            "ts": now,
            "model_version": answer.model_version,
            "inputs": inputs[item].tobytes(),
            "label": label,
            "probabilities": probabilities[item].tobytes(),
        }
        for item, label in enumerate(answer.labels)
    ]


def _stored(connection, request_id: str) -> Answer | None:
    from sqlalchemy import select

    found = connection.execute(
        select(predictions).where(predictions.c.request_id == request_id).order_by(predictions.c.item)
    ).mappings().all()  # fmt: skip
    if not found:
        return None
    return Answer(
        request_id,
        found[0]["model_version"],
        np.stack([np.frombuffer(r["inputs"], dtype=np.float32) for r in found]),
        [r["label"] for r in found],
        np.stack([np.frombuffer(r["probabilities"], dtype=np.float64) for r in found]),
    )
