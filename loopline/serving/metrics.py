"""Prometheus metrics of the model server, served by BentoML on ``/metrics``.

BentoML runs API workers as separate processes and sets ``PROMETHEUS_MULTIPROC_DIR`` for
them, so these are plain prometheus_client metrics that it aggregates across workers.
The Grafana dashboard and the alert rules in ``infra/`` use these names.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Awaitable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from starlette.responses import Response

REQUESTS = "loopline_requests"  # exported as loopline_requests_total
LATENCY = "loopline_request_duration_seconds"
ERRORS = "loopline_request_errors"  # exported as loopline_request_errors_total
PREDICTIONS = "loopline_predictions"  # exported as loopline_predictions_total
SERVED_VERSION = "loopline_served_model_version"
# Prediction latency: a batch waits for the forward pass before it, and a PNG may take 2 s
# to decode.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServingMetrics:
    """One set per API worker process."""

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
        self._served: str | None = None

    async def timed(self, endpoint: str, answer: Awaitable[Response]) -> Response:
        started = time.perf_counter()
        response = await answer
        self.latency.labels(endpoint).observe(time.perf_counter() - started)
        status = response.status_code
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, "client" if status < 500 else "server").inc()
        return response

    def predicted(self, version: str, labels: list[str]) -> None:
        for label, count in Tally(labels).items():
            self.predictions.labels(version, label).inc(count)
        if version != self._served and version.isdigit():
            self.served.labels(self.model_name).set(float(version))
            self._served = version
