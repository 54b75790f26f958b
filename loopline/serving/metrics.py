"""Prometheus metrics of the model server, served by BentoML on ``/metrics``.

BentoML runs API workers as separate processes and sets ``PROMETHEUS_MULTIPROC_DIR`` for
them, so these are plain prometheus_client metrics that it aggregates across workers.
The Grafana dashboard and the alert rules in ``infra/`` use these names.

Those files are memory-mapped, and prometheus_client makes them sparse: on a full disk the
first write to a page not yet backed kills the process with SIGBUS. :func:`allocate_files`
makes every such file allocate its blocks before it is mapped or grown, so a full disk
is an ``OSError`` that a metric update survives (the metric is skipped, the request is
answered) instead of a dead worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Awaitable

import prometheus_client.values
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict
from starlette.responses import Response

log = logging.getLogger("loopline.serving")

REQUESTS = "loopline_requests"  # exported as loopline_requests_total
LATENCY = "loopline_request_duration_seconds"
ERRORS = "loopline_request_errors"  # exported as loopline_request_errors_total
PREDICTIONS = "loopline_predictions"  # exported as loopline_predictions_total
SERVED_VERSION = "loopline_served_model_version"
# Prediction latency: a batch waits for the forward pass before it, and a PNG may take 2 s
# to decode.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AllocatedMmapedDict(MmapedDict):
    """prometheus_client's file of metric values, with its blocks allocated up front."""

    def __init__(self, filename: str, read_mode: bool = False):
        if not read_mode:
            with open(filename, "a+b") as file:
                size = max(os.fstat(file.fileno()).st_size, _INITIAL_MMAP_SIZE)
                os.posix_fallocate(file.fileno(), 0, size)
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        # The entry: a 4-byte length, the key padded to 8 bytes, two 8-byte doubles.
        needed, capacity = self._used + len(key.encode()) + 32, self._capacity
        while needed > capacity:
            capacity *= 2  # as the parent grows it
        if capacity > self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)


def allocate_files() -> None:
    """Make this process's metric files allocated ones (call before any metric is written)."""
    prometheus_client.values.MmapedDict = AllocatedMmapedDict


class ServingMetrics:
    """One set per API worker process. A metric that cannot be written (a full disk) is
    skipped and logged once: the request it counts is answered all the same."""

    def __init__(self, model_name: str, registry: CollectorRegistry = REGISTRY):
        self.model_name = model_name
        self.requests = Counter(
            REQUESTS,
            "HTTP requests, by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            LATENCY, "Time to answer, by endpoint", ["endpoint"], buckets=BUCKETS, registry=registry
        )
        self.errors = Counter(
            ERRORS,
            "Answers with a 4xx or 5xx status, by endpoint and kind",
            ["endpoint", "kind"],
            registry=registry,
        )
        self.predictions = Counter(
            PREDICTIONS,
            "Predictions served, by model version and class",
            ["model_version", "label"],
            registry=registry,
        )
        # livemax: the highest version any live worker served last; a switch shows at once
        self.served = Gauge(
            SERVED_VERSION,
            "The model version this server answers with",
            ["model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._failing = False

    async def timed(self, endpoint: str, answer: Awaitable[Response]) -> Response:
        started = time.perf_counter()
        response = await answer
        status = response.status_code
        try:
            self.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.requests.labels(endpoint, str(status)).inc()
            if status >= 400:
                self.errors.labels(endpoint, "client" if status < 500 else "server").inc()
        except OSError as exc:
            self._skipped(exc)
        return response

    def predicted(self, version: str, labels: list[str]) -> None:
        try:
            for label, count in Tally(labels).items():
                self.predictions.labels(version, label).inc(count)
        except OSError as exc:
            self._skipped(exc)

    def serving(self, version: str) -> None:
        """The version now loaded: set when the model switches, not when a request comes,
        so an idle server reports a promotion or a rollback within one poll."""
        try:
            if version.isdigit():
                self.served.labels(self.model_name).set(float(version))
        except OSError as exc:
            self._skipped(exc)

    def _skipped(self, exc: OSError) -> None:
        if not self._failing:
            log.error("metrics cannot be written (%s); skipping them until they can", exc)
        self._failing = True
