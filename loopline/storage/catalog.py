"""The catalog's records, in the platform's database (``LOOPLINE_DATABASE_URL``): SQLite
under ``LOOPLINE_HOME`` on one machine, PostgreSQL for a team.

A version is written once. Publishing hands the version just below it, with its
interface, to the caller's check inside the same transaction, so that a version number
that understates the change is refused (:func:`loopline.catalog.interface.refuse_understated`)
and two publishers cannot both pass it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError

from loopline.core.errors import UsageError
from loopline.core.semver import Bump, Range, Version
from loopline.storage.database import Database
from loopline.storage.tables import catalog_components as components_table
from loopline.storage.tables import catalog_uses


class CatalogError(UsageError):
    """A publish, lookup or deprecation the catalog refuses; the message says why and what
    to do instead."""


@dataclass(frozen=True)
class Entry:
    name: str
    version: Version
    owner: str
    description: str
    digest: str
    source: str
    component_yaml: str
    interface: dict
    changelog: str
    report: dict
    published: float
    deprecated: str | None

    def to_json(self, *, full: bool = False) -> dict:
        shown = {
            "name": self.name,
            "version": str(self.version),
            "owner": self.owner,
            "description": self.description,
            "digest": self.digest,
            "interface": self.interface,
            "changelog": self.changelog,
            "published": self.published,
            "deprecated": self.deprecated,
            "checks": self.report,
        }
        if full:
            shown |= {"source": self.source, "component_yaml": self.component_yaml}
        return shown


class Catalog:
    def __init__(self, database: Database):
        self.database = database

    def publish(
        self,
        *,
        name: str,
        version: Version,
        owner: str,
        description: str,
        source: str,
        component_yaml: str,
        interface: dict,
        changelog: str,
        report: dict,
        check: Callable[[Version, dict], None] | None = None,
        check_above: Callable[[Version, dict], None] | None = None,
    ) -> Entry:
        """Write a new version; ``check(before, its interface)`` and, for a version published
        below a newer one, ``check_above(after, its interface)`` may refuse it by raising."""
        with self.database.write() as connection:  # one publisher at a time per database
            existing = self._versions(connection, name)
            if version in existing:
                raise CatalogError(
                    f"{name} {version} is already published, and versions never change; "
                    f"publish the change as {self._next_free(existing, version)}"
                )
            before = max((v for v in existing if v < version), default=None)
            if before is not None and check is not None:
                check(before, self._interface(connection, name, before))
            after = min((v for v in existing if v > version), default=None)
            if after is not None and check_above is not None:
                check_above(after, self._interface(connection, name, after))
            row = {
                "name": name,
                "version": str(version),
                "major": version.major,
                "minor": version.minor,
                "patch": version.patch,
                "owner": owner,
                "description": description,
                "source": source,
                "digest": hashlib.sha256(source.encode()).hexdigest(),
                "component_yaml": component_yaml,
                "interface": json.dumps(interface),
                "changelog": changelog,
                "report": json.dumps(report),
                "published": time.time(),
                "deprecated": None,
            }
            try:
                connection.execute(components_table.insert().values(**row))
            except IntegrityError:  # a concurrent publisher won the same version
                raise CatalogError(
                    f"{name} {version} was published by someone else just now; publish the "
                    f"change as {version.next(Bump.PATCH)} after checking theirs"
                ) from None
        return self.get(name, str(version))

    @staticmethod
    def _interface(connection, name: str, version: Version) -> dict:
        row = connection.execute(
            select(components_table.c.interface).where(
                and_(components_table.c.name == name, components_table.c.version == str(version))
            )
        ).one()
        return json.loads(row.interface)

    def get(self, name: str, spec: str = "*") -> Entry:
        """The newest version of ``name`` in the range ``spec``."""
        wanted = Range.parse(spec)
        with self.database.read() as connection:
            versions = self._versions(connection, name)
            if not versions:
                raise CatalogError(self._unknown(connection, name))
            best = wanted.best(versions)
            if best is None:
                raise CatalogError(
                    f"no version of {name} is in the range {wanted.text}; its versions are "
                    f"{', '.join(map(str, sorted(versions)))}"
                )
            row = connection.execute(
                select(components_table).where(
                    and_(components_table.c.name == name, components_table.c.version == str(best))
                )
            ).one()
        return _entry(row)

    def versions(self, name: str) -> list[Entry]:
        with self.database.read() as connection:
            rows = connection.execute(
                select(components_table)
                .where(components_table.c.name == name)
                .order_by(
                    components_table.c.major, components_table.c.minor, components_table.c.patch
                )
            ).all()
            if not rows:
                raise CatalogError(self._unknown(connection, name))
        return [_entry(r) for r in rows]

    def names(self) -> list[str]:
        with self.database.read() as connection:
            rows = connection.execute(
                select(components_table.c.name).distinct().order_by(components_table.c.name)
            ).all()
        return [r.name for r in rows]

    def latest(self) -> list[Entry]:
        """The newest version of each component."""
        return [self.versions(name)[-1] for name in self.names()]

    def deprecate(self, name: str, version: str, message: str) -> Entry:
        entry = self.get(name, Version.parse(version).__str__())
        with self.database.write() as connection:
            connection.execute(
                update(components_table)
                .where(
                    and_(
                        components_table.c.name == name,
                        components_table.c.version == str(entry.version),
                    )
                )
                .values(deprecated=message)
            )
        return self.get(name, str(entry.version))

    def record_uses(self, pipeline: str, pins: dict[str, str]) -> None:
        with self.database.write() as connection:
            for name, version in pins.items():
                statement = self.database.upsert(
                    catalog_uses, ["pipeline", "name"], ["version", "ts"]
                )
                connection.execute(
                    statement.values(pipeline=pipeline, name=name, version=version, ts=time.time())
                )

    def uses(self) -> dict[str, list[tuple[str, str]]]:
        """component name -> [(pipeline, version)]."""
        with self.database.read() as connection:
            rows = connection.execute(select(catalog_uses).order_by(catalog_uses.c.pipeline))
            found: dict[str, list[tuple[str, str]]] = {}
            for row in rows:
                found.setdefault(row.name, []).append((row.pipeline, row.version))
        return found

    @staticmethod
    def _versions(connection, name: str) -> list[Version]:
        rows = connection.execute(
            select(components_table.c.version).where(components_table.c.name == name)
        ).all()
        return [Version.parse(r.version) for r in rows]

    @staticmethod
    def _next_free(existing: list[Version], version: Version) -> Version:
        candidate = version.next(Bump.PATCH)
        while candidate in existing:
            candidate = candidate.next(Bump.PATCH)
        return candidate

    @staticmethod
    def _unknown(connection, name: str) -> str:
        rows = connection.execute(select(components_table.c.name).distinct()).all()
        known = sorted(r.name for r in rows)
        return f"no component named {name} is in the catalog; " + (
            f"it holds {', '.join(known)}" if known else "it is empty: publish one first"
        )


def _entry(row) -> Entry:
    return Entry(
        name=row.name,
        version=Version.parse(row.version),
        owner=row.owner,
        description=row.description,
        digest=row.digest,
        source=row.source,
        component_yaml=row.component_yaml,
        interface=json.loads(row.interface),
        changelog=row.changelog,
        report=json.loads(row.report),
        published=row.published,
        deprecated=row.deprecated,
    )
