"""Adaptive batching in the server process: the rows of concurrent requests share one
forward pass, with no second service, no serialization and no fixed wait.

The rule is the prediction log's group commit. A request that finds the model idle runs
at once; requests that arrive while a forward pass runs wait for it, then go together
into the next one, up to ``max_rows``. A lone request therefore pays for one forward pass
and nothing else, and under load the batches grow by themselves. A request is never split
across passes, and each pass runs one model: the one its requests were validated against,
so a request answered across a champion switch still names the model of every row.

The batcher also knows how long its queue would take (:meth:`Batcher.backlog_s`): the rows
waiting or running, times the recent seconds per row. The server refuses a request with 429
rather than queue it behind more than a bound.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the model's module brings torch; the server's arbiter imports this one
    from loopline.serving.champion import ServedModel


@dataclass(frozen=True)
class Outputs:
    """What one model said about the rows of one request."""

    model_version: str
    labels: list[str]
    probabilities: np.ndarray  # (rows, classes) float64


@dataclass
class _Waiting:
    model: ServedModel
    rows: object  # what the model's parse gave
    future: asyncio.Future


class Batcher:
    """Forward passes for one event loop, one at a time, off the loop in one thread (the
    model's own kernels use the cores)."""

    def __init__(self, max_rows: int, *, batching: bool = True):
        self.max_rows = max_rows
        self.batching = batching
        self._waiting: list[_Waiting] = []
        self._running: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._queued_rows = 0
        # Recent forward passes, decayed: their seconds and rows (larger passes weigh more).
        self._seconds = 0.0
        self._rows = 0.0

    async def predict(self, model: ServedModel, rows) -> Outputs:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(model, rows, future))
        self._queued_rows += len(rows)
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        try:
            return await future
        finally:
            self._queued_rows -= len(rows)

    def backlog_s(self) -> float:
        """About how long the rows already waiting or running will take."""
        if not self._rows:
            return 0.0
        return self._queued_rows * self._seconds / self._rows

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                for _, items in groupby(batch, key=lambda w: id(w.model)):
                    await self._run(list(items))
        finally:
            self._running = None

    def _take(self) -> list[_Waiting]:
        """The oldest request plus those behind it while they fit, grouped by model."""
        taken, rows = 1, len(self._waiting[0].rows)
        while self.batching and taken < len(self._waiting):
            more = len(self._waiting[taken].rows)
            if rows + more > self.max_rows:
                break
            taken, rows = taken + 1, rows + more
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return sorted(batch, key=lambda w: id(w.model))  # stable: arrival order per model

    async def _run(self, items: list[_Waiting]) -> None:
        model = items[0].model
        rows = model.concat([w.rows for w in items])
        started = time.perf_counter()
        try:
            labels, probabilities = await asyncio.get_running_loop().run_in_executor(
                self._thread, model.answer, rows
            )
            self._seconds = 0.8 * self._seconds + time.perf_counter() - started
            self._rows = 0.8 * self._rows + len(rows)
        except Exception as exc:  # every request of the pass hears it
            for waiting in items:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        start = 0
        for waiting in items:
            end = start + len(waiting.rows)
            if not waiting.future.done():  # a client that left cancels its future
                waiting.future.set_result(
                    Outputs(model.version, labels[start:end], probabilities[start:end])
                )
            start = end
