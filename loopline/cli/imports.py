"""Heavy imports for commands that run once and exit.

Importing Evidently builds hundreds of thousands of objects (pydantic classes among
them), and Python's cyclic garbage collector walks the growing heap again and again while
it does; the same objects then live as long as the process. Imported with the collector
paused, then frozen out of its reach (``gc.freeze``), a one-shot ``loopline monitor``
took 6.6-7.0 s instead of 7.6-8.2 s, at the same peak memory (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Run the imports in the ``with`` block with the collector paused; what they built
    is never collected (it lives until exit anyway) nor walked again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
