"""How a model server runs, read from ``LOOPLINE_SERVE_*`` environment variables.

The service module reads these at import, because BentoML fixes the worker count when
the service class is defined; ``loopline serve`` sets them for its child.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from loopline.core.settings import SettingsError


@dataclass(frozen=True)
class ServeOptions:
    version: str | None  # a pinned registry version; None follows the champion alias
    poll_s: float  # how often the server checks whether the champion moved
    batching: bool
    max_batch: int
    api_workers: int
    max_bytes: int
    max_instances: int
    threads: int  # torch's threads for the forward pass
    trace_sample_rate: float  # the share of requests traced with OpenTelemetry; 0: none

    @property
    def tracing(self) -> dict:
        """BentoML's tracing settings for the service. BentoML opens OpenTelemetry spans
        for every request and every body read and write even at its default sample rate
        of 0, which records none of them: 0.3 ms of CPU per request, a fifth of a small
        model's whole cost (benchmarks/README.md). So with tracing off its middleware
        skips every URL; with a rate it traces as BentoML would, to the exporter set in
        BentoML's configuration."""
        if self.trace_sample_rate == 0:
            return {"excluded_urls": ["."]}  # a pattern that every URL contains
        return {"sample_rate": self.trace_sample_rate}


def load_options(env: dict[str, str] | None = None) -> ServeOptions:
    env = dict(os.environ if env is None else env)
    batching = env.get("LOOPLINE_SERVE_BATCHING", "on").lower()
    if batching not in ("on", "off"):
        raise SettingsError(f"LOOPLINE_SERVE_BATCHING={batching!r}; set it to on or off.")
    return ServeOptions(
        version=env.get("LOOPLINE_SERVE_VERSION") or None,
        poll_s=_number(env, "LOOPLINE_SERVE_POLL_S", 2.0),
        batching=batching == "on",
        max_batch=int(_number(env, "LOOPLINE_SERVE_MAX_BATCH", 256)),
        api_workers=int(_number(env, "LOOPLINE_SERVE_WORKERS", 1)),
        max_bytes=int(_number(env, "LOOPLINE_SERVE_MAX_BYTES", 1_000_000)),
        max_instances=int(_number(env, "LOOPLINE_SERVE_MAX_INSTANCES", 256)),
        threads=int(_number(env, "LOOPLINE_SERVE_THREADS", max(1, usable_cpus() - 1))),
        trace_sample_rate=_share(env, "LOOPLINE_SERVE_TRACE_SAMPLE_RATE"),
    )


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: its affinity, capped by a container's CPU limit
    (cgroup v2 quota), which torch's own count does not see. A server leaves one of them
    to the event loop (HTTP, validation, the log) and gives the rest to the model: two
    threads on two cores made a lone request 10% slower, spinning against the loop
    (benchmarks/README.md)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def _share(env: dict[str, str], name: str) -> float:
    raw = env.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise SettingsError(f"{name}={raw!r} must be a share from 0 to 1; e.g. 0.01.")
    return value


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to e.g. {default}.") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive; e.g. {default}.")
    return value
