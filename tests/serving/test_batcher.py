"""The in-process batcher: concurrent requests share forward passes, none is split or
answered by another model, a failed pass fails only its own requests, and a lone request
runs at once. Real torch models; the passes are counted by wrapping ``probabilities``."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import torch

from loopline.ml.dataset import DatasetSchema
from loopline.serving.batcher import Batcher
from loopline.serving.champion import LoadedModel

FEATURES = 4
CLASSES = ["a", "b", "c"]


class Counted(LoadedModel):
    """A real model whose forward passes are recorded (rows per pass), optionally slow."""

    def __init__(self, version: str, seed: int, delay: float = 0.0):
        torch.manual_seed(seed)
        schema = DatasetSchema(
            "t", "tabular", [f"f{i}" for i in range(FEATURES)], CLASSES, [FEATURES]
        )
        super().__init__("m", version, torch.nn.Linear(FEATURES, 3).eval(), schema, Path("."))
        object.__setattr__(self, "passes", [])
        object.__setattr__(self, "delay", delay)

    def probabilities(self, rows):
        self.passes.append(len(rows))
        time.sleep(self.delay)
        return super().probabilities(rows)


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, FEATURES), dtype=np.float32)


def predict_all(requests, max_rows: int = 256, *, batching: bool = True) -> list:
    """Every (model, rows) request sent at once to one batcher; the answers in order."""

    async def main():
        batcher = Batcher(max_rows, batching=batching)
        try:
            return await asyncio.gather(*(batcher.predict(m, r) for m, r in requests))
        finally:
            batcher.close()

    return asyncio.run(main())


def test_a_lone_request_runs_alone_and_matches_the_model():
    """Nothing waits for a batch to fill (the latency is measured in benchmarks/serving)."""
    model = Counted("1", seed=0)
    batch = rows(3, 1)
    [outputs] = predict_all([(model, batch)])
    assert model.passes == [3]
    expected = model.probabilities(batch)
    assert outputs.model_version == "1"
    assert np.array_equal(outputs.probabilities, expected)
    assert outputs.labels == [CLASSES[i] for i in expected.argmax(1)]


def test_concurrent_requests_share_passes_and_each_gets_its_own_rows():
    model = Counted("1", seed=0, delay=0.02)
    requests = [rows(1 + i % 5, i) for i in range(60)]

    answers = predict_all([(model, r) for r in requests])
    assert len(model.passes) < len(requests) / 4, model.passes  # merged, not one by one
    assert sum(model.passes) == sum(len(r) for r in requests)
    reference = Counted("1", seed=0)
    for request, outputs in zip(requests, answers, strict=True):
        assert np.allclose(outputs.probabilities, reference.probabilities(request), atol=1e-6)
        assert len(outputs.labels) == len(request)


def test_a_pass_never_exceeds_max_rows_and_never_splits_a_request():
    model = Counted("1", seed=0, delay=0.01)
    requests = [rows(7, i) for i in range(30)] + [rows(40, 99)]  # the last one alone is > 32

    answers = predict_all([(model, r) for r in requests], max_rows=32)
    assert [len(a.labels) for a in answers] == [len(r) for r in requests]
    assert all(n % 7 == 0 or n == 40 for n in model.passes), model.passes
    assert max(n for n in model.passes if n != 40) <= 32 and 40 in model.passes


def test_batching_off_runs_each_request_alone():
    model = Counted("1", seed=0, delay=0.005)
    requests = [rows(2, i) for i in range(10)]

    predict_all([(model, r) for r in requests], batching=False)
    assert model.passes == [2] * 10


def test_requests_across_a_champion_switch_are_each_answered_by_their_own_model():
    old, new = Counted("1", seed=0, delay=0.01), Counted("2", seed=1)
    requests = [(old if i % 3 else new, rows(2, i)) for i in range(30)]

    answers = predict_all(requests)
    for (model, request), outputs in zip(requests, answers, strict=True):
        assert outputs.model_version == model.version
        fresh = Counted(model.version, seed=0 if model is old else 1)
        assert np.allclose(outputs.probabilities, fresh.probabilities(request), atol=1e-6)


def test_a_failing_pass_fails_its_requests_and_the_batcher_keeps_serving():
    model = Counted("1", seed=0, delay=0.01)
    wrong = rows(2, 0)[:, :3]  # three features for a four-feature model

    async def main():
        batcher = Batcher(256)
        first = asyncio.create_task(batcher.predict(model, rows(1, 1)))  # runs alone
        await asyncio.sleep(0)
        bad = asyncio.create_task(batcher.predict(model, wrong))  # waits, fails alone
        results = await asyncio.gather(first, bad, return_exceptions=True)
        after = await batcher.predict(model, rows(3, 2))
        batcher.close()
        return results, after

    (first, bad), after = asyncio.run(main())
    assert len(first.labels) == 1
    assert isinstance(bad, RuntimeError)
    assert len(after.labels) == 3


def test_a_client_that_leaves_does_not_stop_the_others():
    model = Counted("1", seed=0, delay=0.05)

    async def main():
        batcher = Batcher(256)
        first = asyncio.create_task(batcher.predict(model, rows(1, 1)))
        await asyncio.sleep(0.01)  # the first pass is running
        leaving = asyncio.create_task(batcher.predict(model, rows(1, 2)))
        staying = asyncio.create_task(batcher.predict(model, rows(2, 3)))
        await asyncio.sleep(0)
        leaving.cancel()
        answers = await asyncio.gather(first, staying)
        batcher.close()
        return answers, leaving

    (first, staying), leaving = asyncio.run(main())
    assert leaving.cancelled()
    assert len(first.labels) == 1 and len(staying.labels) == 2


def test_one_batcher_per_event_loop_thread():
    """Each API worker has its own loop and batcher; two loops in two threads do not mix."""
    model = Counted("1", seed=0, delay=0.002)
    results: dict[int, list[int]] = {}

    def worker(index: int) -> None:
        async def main():
            batcher = Batcher(256)
            answers = await asyncio.gather(*(batcher.predict(model, rows(1, i)) for i in range(20)))
            batcher.close()
            return [len(a.labels) for a in answers]

        results[index] = asyncio.run(main())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: [1] * 20 for i in range(2)}
