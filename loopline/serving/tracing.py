"""BentoML's tracing settings for the service, from ``LOOPLINE_SERVE_TRACE_SAMPLE_RATE``.

BentoML opens OpenTelemetry spans for every request and every body read and write even
at its default sample rate of 0, which records none of them: 0.3 ms of CPU per request,
a fifth of a small model's whole cost (benchmarks/README.md). So with tracing off its
middleware skips every URL; with a rate it traces as BentoML would, to the exporter set
in BentoML's configuration.
"""

from __future__ import annotations

from loopline.core.settings import ServeSettings


def bentoml_tracing(serve: ServeSettings) -> dict:
    if serve.trace_sample_rate == 0:
        return {"excluded_urls": ["."]}  # a pattern that every URL contains
    return {"sample_rate": serve.trace_sample_rate}
