"""The installed ``loopline`` package and the data it carries, found through
``importlib.resources`` and ``importlib.metadata``: the same answer in a checkout, a
wheel installed into a virtual environment, the platform image and a Bento."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import re
from pathlib import Path

import loopline

DISTRIBUTION = "loopline"


def installed_root() -> Path:
    """The folder that holds the ``loopline`` package (site-packages, or a checkout
    installed in editable mode): Prefect loads flows from it, and a Bento copies it."""
    return Path(loopline.__file__).resolve().parent.parent


def data(*parts: str) -> Path:
    """A file or folder shipped as package data, e.g. ``data("infra", "k8s")``."""
    return Path(str(importlib.resources.files("loopline").joinpath(*parts)))


def requirements() -> list[str]:
    """loopline's own dependency pins (without extras), so a Bento runs what the tests ran."""
    required = importlib.metadata.requires(DISTRIBUTION) or []
    return [r for r in required if not re.search(r";\s*extra\s*==", r)]
