"""A migrated Prefect database that a new home's server copies instead of migrating.

A fresh home's first server start spent about half its CPU (7 of 14 s) running Prefect's
Alembic migrations on an empty SQLite file, and every home of one installation migrates
to the same schema. So the first server that migrates a fresh home keeps a copy of the
result, taken with SQLite's backup API before the server serves anything, and the next
fresh home's server starts from a copy of it. Prefect's own migrate-on-start still runs on
the copy: a no-op at the head revision (skipping it saved nothing measurable).

The template also holds Prefect's block types, registered as Prefect's server registers
them on start, with the installed collections' (``prefect.collections`` entry points:
prefect-kubernetes). A server whose database came from here skips that registration,
and with it the import of every collection (1.2 CPU s for prefect-kubernetes alone, to
register blocks a home never uses); it holds no runs.

- **Where**: ``LOOPLINE_PREFECT_TEMPLATE``, by default ``var/loopline/prefect`` under
  ``sys.prefix`` when that is a virtual environment (where Prefect itself writes its UI
  build at run time), and none under a system Python: never under ``$HOME``, never inside
  one home. ``off`` turns it off. A folder that
  cannot be written means no template, and the home migrates as before (the server's log
  says why).
- **Keyed** by what decides its content: Prefect's version, the Alembic head of its SQLite
  migrations and a digest of those migration files and of the installed collections'
  names and versions, all in the file's name (``prefect-<version>-<head>-<digest>.db``).
  A template of any other key is never read, and is deleted when one of the current key
  is written.
- **Checked** before use: a copy is used only if SQLite reads it whole (``quick_check``),
  its ``alembic_version`` is Prefect's head and it holds block types; a truncated,
  damaged or other-revision template is ignored (and replaced by the home's own migrated
  database).
- **Written atomically**: a temporary file, fsync, ``os.replace``. Homes that migrate at
  the same moment each write their own temporary file and the last rename wins; a home
  that copies it sees a whole file or none.
- **SQLite only**: when Prefect's database is not the default ``PREFECT_HOME/prefect.db``
  (``PREFECT_API_DATABASE_CONNECTION_URL`` set), nothing here runs.

Called by the server process (``prefect_supervisor --serve``) before Prefect's app starts,
with Prefect's settings already those of the home.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

STALE_TEMPORARY_S = 3600.0  # a writer's temporary file this old was left by a crash


def prepare(folder: Path | None) -> str:
    """A fresh home's database, copied from the template in ``folder`` when one of the
    current key is whole and at the head revision, else migrated and its blocks
    registered here, and kept there as the template. What was done, for the server's
    log; '' when nothing (a home that has a database, a database that is not the default
    SQLite file, or no folder). Whenever it says something, the database holds Prefect's
    block types, so the server need not register them (:func:`registered`)."""
    if folder is None or (db := database()) is None or _started(db):
        return ""
    name, head = key()
    slot = folder / name
    problem = restore(slot, db, head)
    if problem is None:
        return f"copied from the template {slot}"
    migrate()
    register_blocks()
    return f"migrated (the template {slot} was not used: {problem}); {keep(db, slot, head)}"


def registered() -> dict:
    """Prefect's settings for a server whose database ``prepare`` made: no block
    registration on start, and so no import of the collections it would register."""
    from prefect.settings import (
        PREFECT_API_BLOCKS_REGISTER_ON_START,
        PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION,
    )

    return {
        PREFECT_API_BLOCKS_REGISTER_ON_START: False,
        PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION: False,
    }


def database() -> Path | None:
    """Prefect's database file when it is the default SQLite one, else None."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.server.database.connection_url
    url = url.get_secret_value() if url is not None else ""
    default = Path(settings.home) / "prefect.db"
    return default if url == f"sqlite+aiosqlite:///{default}" else None


def key() -> tuple[str, str]:
    """The template's file name for this Prefect, and the head revision it must hold."""
    import prefect
    import prefect.server.database
    from alembic.script import ScriptDirectory

    migrations = Path(prefect.server.database.__file__).parent / "_migrations"
    versions = migrations / "versions" / "sqlite"
    script = ScriptDirectory(str(migrations), version_locations=[str(versions)])
    head = str(script.get_current_head())
    digest = hashlib.sha256()
    for file in [migrations / "env.py", *sorted(versions.glob("*.py"))]:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    for collection in _collections():
        digest.update(collection.encode() + b"\0")
    return f"prefect-{prefect.__version__}-{head}-{digest.hexdigest()[:16]}.db", head


def _collections() -> list[str]:
    """The installed Prefect collections whose blocks the template holds: name==version."""
    from importlib.metadata import entry_points

    found = entry_points(group="prefect.collections")
    return sorted(f"{e.value}=={e.dist.version if e.dist else '?'}" for e in found)


def migrate() -> None:
    """Prefect's own migrations on its database, as its server runs them on start."""
    import asyncio

    from prefect.server.database import provide_database_interface

    asyncio.run(provide_database_interface().create_db())


def register_blocks() -> None:
    """Prefect's block types and schemas, with the installed collections', as its server
    registers them on start (``prefect.server.api.server``, ``add_block_types``)."""
    import asyncio

    import prefect.plugins
    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    prefect.plugins.load_prefect_collections()

    async def register() -> None:
        async with await provide_database_interface().session() as session:
            await run_block_auto_registration(session=session)  # commits as it goes

    asyncio.run(register())


def restore(slot: Path, db: Path, head: str) -> str | None:
    """Copy the template ``slot`` to ``db`` if it is whole and at ``head``; else why not."""
    if not slot.is_file():
        return "there is none yet"
    partial = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(slot, partial)
        if (problem := usable(partial, head)) is not None:
            return problem
        _fsync(partial)
        os.replace(partial, db)
        return None
    except OSError as exc:
        return f"could not copy it: {exc}"
    finally:
        partial.unlink(missing_ok=True)


def keep(db: Path, slot: Path, head: str) -> str:
    """Keep the freshly migrated ``db`` as the template ``slot``; what was done."""
    partial = slot.with_name(f".{slot.name}.{os.getpid()}.tmp")
    try:
        slot.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        with (
            contextlib.closing(sqlite3.connect(db)) as source,
            contextlib.closing(sqlite3.connect(partial)) as copy,
        ):
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # one file, readable read-only
        if (problem := usable(partial, head)) is not None:
            return f"not kept as the template: {problem}"
        _fsync(partial)
        os.replace(partial, slot)
        _fsync(slot.parent)
    except (OSError, sqlite3.Error) as exc:
        return f"no template kept ({exc})"
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    _prune(slot)
    return f"kept as the template {slot}"


def usable(path: Path, head: str) -> str | None:
    """None if SQLite reads ``path`` whole, its schema is at ``head`` and it holds block
    types; else why not."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                return f"damaged: {check[:3]}"
            revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
            if revisions != [head]:
                return f"at revision {revisions}, not Prefect's head {head}"
            (block_types,) = conn.execute("SELECT count(*) FROM block_type").fetchone()
    except sqlite3.Error as exc:
        return f"unreadable: {exc}"
    return None if block_types else "no block types registered"


def _started(db: Path) -> bool:
    """Whether the home has a database, or the remains of one, already."""
    return any(db.with_name(db.name + tail).exists() for tail in ("", "-wal", "-journal"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(slot: Path) -> None:
    """Templates of other keys (an earlier Prefect), and temporary files of crashed writers."""
    for other in slot.parent.glob("prefect-*.db"):
        if other != slot:
            with contextlib.suppress(OSError):
                other.unlink(missing_ok=True)
    for partial in slot.parent.glob(".prefect-*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - partial.stat().st_mtime > STALE_TEMPORARY_S:
                partial.unlink()
