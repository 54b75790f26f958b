"""A pipeline as the CLI loads it: the IR of a built-in, a ``.py`` file or compiled YAML,
with a ``.py`` file's catalog components pinned by its lock file
(:mod:`loopline.catalog.lock`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loopline import catalog
from loopline.catalog.lock import pinning
from loopline.core.settings import Settings
from loopline.pipelines.ir import PipelineIR, load


@dataclass
class Loaded:
    ir: PipelineIR
    warnings: list[str] = field(default_factory=list)
    lock: Path | None = None  # the lock file written, when asked to pin
    pinned: dict[str, str] = field(default_factory=dict)  # component -> version


def load_pinned(
    source: str,
    settings: Settings,
    target: str = "cpu",
    name: str | None = None,
    *,
    write_lock: bool = False,
) -> Loaded:
    """The pipeline's IR; ``write_lock`` pins what a .py file's components resolved to,
    and records the pins in the catalog (its page lists the pipelines using each)."""
    path = Path(source)
    if path.suffix != ".py" or not path.exists():
        return Loaded(load(source, name=name, target=target))
    with pinning(path) as pins:
        loaded = Loaded(load(source, name=name, target=target), list(pins.warnings))
    if write_lock and (written := pins.write()):
        loaded.lock = written
        loaded.pinned = {k: v["version"] for k, v in pins.used.items()}
        with catalog.opened(settings) as store:
            store.record_uses(str(written.resolve()), loaded.pinned)
    return loaded
