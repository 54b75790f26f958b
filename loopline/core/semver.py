"""Semantic versions and the ranges pipelines ask for (``^1.2``, ``~1.2.3``, ``>=1,<3``):
the catalog's versions (:mod:`loopline.catalog`) and their records (:mod:`loopline.storage.catalog`).

A range is npm's caret or tilde, an exact ``X.Y.Z``, ``*`` (or nothing: the newest), or
PEP 440 comparisons separated by commas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from loopline.core.errors import UsageError

_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_PARTIAL = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?$")


class VersionError(UsageError):
    """A malformed version or range; the message gives the accepted forms."""


class Bump(IntEnum):
    """How far a new version is from its predecessor; ordered, so bumps compare."""

    PATCH = 1
    MINOR = 2
    MAJOR = 3


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.match(text.strip())
        if not match:
            raise VersionError(
                f"{text!r} is not a version; use MAJOR.MINOR.PATCH, for example 1.0.0"
            )
        return cls(*map(int, match.groups()))

    def bump_from(self, before: Version) -> Bump:
        if self.major != before.major:
            return Bump.MAJOR
        return Bump.MINOR if self.minor != before.minor else Bump.PATCH

    def next(self, bump: Bump) -> Version:
        if bump is Bump.MAJOR:
            return Version(self.major + 1, 0, 0)
        if bump is Bump.MINOR:
            return Version(self.major, self.minor + 1, 0)
        return Version(self.major, self.minor, self.patch + 1)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Range:
    text: str
    lower: Version | None  # inclusive
    upper: Version | None  # exclusive
    exact: Version | None = None

    @classmethod
    def parse(cls, text: str) -> Range:
        spec = text.strip()
        if spec in ("", "*", "latest"):
            return cls(spec or "*", None, None)
        if spec[0] in "^~":
            parts = _partial(spec[1:], text)
            lower = Version(parts[0], parts[1] or 0, parts[2] or 0)
            if spec[0] == "^":  # the same major (or, below 1.0, the same minor)
                upper = lower.next(Bump.MAJOR if lower.major else Bump.MINOR)
            else:  # the same minor, or the same major when only the major is given
                upper = lower.next(Bump.MINOR if parts[1] is not None else Bump.MAJOR)
            return cls(spec, lower, upper)
        if _VERSION.match(spec):
            version = Version.parse(spec)
            return cls(spec, version, None, exact=version)
        return cls._comparisons(spec, text)

    @classmethod
    def _comparisons(cls, spec: str, text: str) -> Range:
        lower = upper = None
        for clause in spec.split(","):
            match = re.match(r"^\s*(>=|<|>|<=)\s*([\d.]+)\s*$", clause)
            if not match:
                raise _bad_range(text)
            op, raw = match.groups()
            parts = _partial(raw, text)
            version = Version(parts[0], parts[1] or 0, parts[2] or 0)
            if op in (">", "<="):  # strict lower and inclusive upper: the next patch
                version = version.next(Bump.PATCH)
            if op in (">=", ">"):
                lower = max(lower, version) if lower else version
            else:
                upper = min(upper, version) if upper else version
        return cls(spec, lower, upper)

    def contains(self, version: Version) -> bool:
        if self.exact is not None:
            return version == self.exact
        return (self.lower is None or version >= self.lower) and (
            self.upper is None or version < self.upper
        )

    def best(self, versions: list[Version]) -> Version | None:
        """The newest version in the range."""
        return max((v for v in versions if self.contains(v)), default=None)


def _partial(raw: str, text: str) -> tuple[int, int | None, int | None]:
    match = _PARTIAL.match(raw.strip())
    if not match:
        raise _bad_range(text)
    major, minor, patch = match.groups()
    return int(major), None if minor is None else int(minor), None if patch is None else int(patch)


def _bad_range(text: str) -> VersionError:
    return VersionError(
        f"{text!r} is not a version range; use ^1.2 (same major), ~1.2 (same minor), "
        f"1.2.3 (exactly), >=1.0,<2 or * (the newest)"
    )
