"""A pipeline's lock file: the catalog versions it was compiled with, so a run can be
reproduced.

``loopline compile pipeline.py`` resolves each ``catalog.load("name@range")`` and writes
``pipeline.catalog.lock`` beside the file. While a lock file exists, ``load`` keeps its
pinned version as long as the pipeline's range still admits it; a new range, or a
component new to the pipeline, resolves to the newest version that fits and the next
compile pins it. ``loopline run`` reads the lock and warns about deprecated pins.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loopline.core.semver import Range, Version

SUFFIX = ".catalog.lock"


@dataclass
class Pinning:
    path: Path
    pins: dict[str, dict] = field(default_factory=dict)  # as the lock file holds them
    used: dict[str, dict] = field(default_factory=dict)  # what this load resolved
    warnings: list[str] = field(default_factory=list)

    def pinned(self, name: str, wanted: Range) -> Version | None:
        pin = self.pins.get(name)
        if pin and pin["range"] == wanted.text and wanted.contains(Version.parse(pin["version"])):
            return Version.parse(pin["version"])
        return None

    def record(self, name: str, wanted: Range, entry) -> None:
        self.used[name] = {
            "range": wanted.text,
            "version": str(entry.version),
            "digest": entry.digest,
        }
        if entry.deprecated:
            self.warnings.append(
                f"{name} {entry.version} (pinned in {self.path.name}) is deprecated: "
                f"{entry.deprecated}"
            )

    def write(self) -> Path | None:
        if not self.used:
            return None
        body = {"components": dict(sorted(self.used.items()))}
        self.path.write_text(json.dumps(body, indent=2) + "\n")
        return self.path


_active: contextvars.ContextVar[Pinning | None] = contextvars.ContextVar(
    "loopline_catalog_pinning", default=None
)


def lock_path(pipeline_file: Path) -> Path:
    return pipeline_file.with_name(pipeline_file.stem + SUFFIX)


@contextlib.contextmanager
def pinning(pipeline_file: Path) -> Iterator[Pinning]:
    """While loading ``pipeline_file``: catalog loads honour and record its lock file."""
    path = lock_path(pipeline_file)
    pins = json.loads(path.read_text())["components"] if path.exists() else {}
    state = Pinning(path, pins)
    token = _active.set(state)
    try:
        yield state
    finally:
        _active.reset(token)


def active() -> Pinning | None:
    return _active.get()
