"""How a model server runs, read from ``LOOPLINE_SERVE_*`` environment variables.

The service module reads these at import, because BentoML fixes batching and worker
counts when the service class is defined; ``loopline serve`` sets them for its child.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from components.settings import SettingsError


@dataclass(frozen=True)
class ServeOptions:
    version: str | None  # a pinned registry version; None follows the champion alias
    poll_s: float  # how often the server checks whether the champion moved
    batching: bool
    max_batch: int
    max_latency_ms: int
    api_workers: int
    max_bytes: int
    max_instances: int


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
        max_latency_ms=int(_number(env, "LOOPLINE_SERVE_MAX_LATENCY_MS", 1000)),
        api_workers=int(_number(env, "LOOPLINE_SERVE_WORKERS", 1)),
        max_bytes=int(_number(env, "LOOPLINE_SERVE_MAX_BYTES", 1_000_000)),
        max_instances=int(_number(env, "LOOPLINE_SERVE_MAX_INSTANCES", 256)),
    )


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
