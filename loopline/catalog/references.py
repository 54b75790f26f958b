"""Component names and references: ``normalize@^1.2`` names a component and a range."""

from __future__ import annotations

import re

from loopline.core.semver import Range, VersionError


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a component, or None when it can."""
    if re.match(r"^[a-z][a-z0-9-]*$", str(name)):
        return None
    return (
        f"{name!r} is not a component name; names are lower-case letters, digits and "
        f"hyphens, starting with a letter (for example normalize-features)"
    )


def parse_reference(reference: str) -> tuple[str, Range]:
    """``normalize@^1.2`` -> ("normalize", ^1.2); a bare name means the newest version."""
    name, _, spec = reference.partition("@")
    if problem := name_problem(name):
        raise VersionError(problem)
    return name, Range.parse(spec)
