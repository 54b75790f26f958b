"""The platform's database, named by ``LOOPLINE_DATABASE_URL``: the prediction log, the
feedback labels, monitoring's checks and triggers.

- **Default:** SQLite under ``LOOPLINE_HOME`` (WAL, ``synchronous=FULL``), for one host.
- **PostgreSQL** wherever more than one host touches the state (replicas, a monitoring
  CronJob, cluster pipeline runs). A SQLite file must never be shared across hosts or
  over a network volume.

The tables are one schema (:mod:`loopline.storage.tables`) and the SQL is shared; the two
dialects differ only here (how a connection starts, how a write transaction takes its
lock, and the upsert constructs) and in the prediction log's writer, which takes a batch
in one statement on PostgreSQL (:mod:`loopline.storage.predictions`). Migrations are Alembic's
(``loopline/storage/migrations``), run by ``loopline db upgrade`` and by the commands that
write (``serve``, ``monitor``, ``feedback``); a command that only reads never migrates
and never creates a database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from loopline.core.errors import UsageError
from loopline.core.package import data
from loopline.core.settings import Settings, SettingsError, sqlite_path
from loopline.storage.tables import REVISIONS

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

MIGRATIONS = data("storage", "migrations")
VARIABLE = "LOOPLINE_DATABASE_URL"
MIGRATION_LOCK = 0x100_9_1_11_E  # pg_advisory_xact_lock key: one migrating process at a time


class SchemaError(UsageError):
    """The database's schema is not the one this code needs; the message says what to do."""


class Database:
    def __init__(self, url: str, *, read_only: bool = False):
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        self.migrated: tuple[str | None, str] | None = None  # (before, after) of an upgrade
        self.shown = self.url.render_as_string(hide_password=True)  # never log a password
        if self.dialect == "sqlite":
            target = self.url
            if read_only:
                target = make_url(f"sqlite:///file:{self.url.database}?mode=ro&uri=true")
            self.engine = create_engine(
                target, connect_args={"timeout": 30, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=4,
                connect_args={"connect_timeout": 10},
            )

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction. On SQLite it takes the write lock at BEGIN (IMMEDIATE), so
        two writers never deadlock on an upgrade from a read lock."""
        with self.engine.execution_options(loopline_write=True).begin() as connection:
            yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def upsert(self, table: Table, keys: list[str], columns: list[str]):
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=keys, set_={c: statement.excluded[c] for c in columns}
        )

    def insert_new(self, table: Table, keys: list[str]):
        """An insert that leaves a row whose ``keys`` exist as it is (a concurrent writer's)."""
        return self._insert(table).on_conflict_do_nothing(index_elements=keys)

    def _insert(self, table: Table):
        dialect = sqlite if self.dialect == "sqlite" else postgresql
        return dialect.insert(table)

    @contextlib.contextmanager
    def driver_write(self, connection) -> Iterator:
        """A write transaction on a driver connection that the caller keeps (from
        ``engine.raw_connection()``), for a writer that commits many times a second:
        SQLAlchemy's transaction and statement handling cost more than the commit. The
        same lock as :meth:`write`. Yields a cursor; commits, or rolls back on error."""
        cursor = connection.cursor()
        try:
            if self.dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")  # psycopg begins by itself
            yield cursor
            connection.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a dead connection cannot; the caller drops it
                connection.rollback()
            raise
        finally:
            cursor.close()

    def driver_sql(self, sql: str) -> str:
        """``sql`` written with ``?`` placeholders, in the driver's own style."""
        return sql if self.engine.dialect.paramstyle == "qmark" else sql.replace("?", "%s")

    def take_numbers(self, cursor, name: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers of the counter ``name`` with a driver
        ``cursor`` in a write transaction; the first one. The counter's row stays locked
        until the transaction ends, so numbers are handed out in commit order."""
        sql = self.driver_sql
        cursor.execute(
            sql("UPDATE counters SET value = value + ? WHERE name = ? RETURNING value"),
            (count, name),
        )
        row = cursor.fetchone()
        if row is None:  # the first number ever: create the counter
            cursor.execute(
                sql("INSERT INTO counters (name, value) VALUES (?, 0) ON CONFLICT DO NOTHING"),
                (name,),
            )
            return self.take_numbers(cursor, name, count)
        return int(row[0]) - count + 1

    def revision(self) -> str | None:
        """The schema revision the database holds; None when it has no loopline tables."""
        with self.read() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate to this code's schema; (revision before, after). Concurrent callers
        take turns (SQLite's write lock, PostgreSQL's advisory lock)."""
        before = self.revision()
        _refuse_newer(before, self.shown)
        if before == REVISIONS[-1]:  # nothing to do: a process that needs no migration
            return before, before  # does not import Alembic (0.2 s)
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as connection:
            if self.dialect == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, REVISIONS[-1])
        return before, REVISIONS[-1]

    def check(self) -> None:
        """Refuse to work on a schema other than this code's, saying why."""
        found = self.revision()
        _refuse_newer(found, self.shown)
        if found != REVISIONS[-1]:
            raise SchemaError(
                f"the database at {self.shown} has schema {found or 'none'}, this loopline needs "
                f"{REVISIONS[-1]}; run `loopline db upgrade`"
            )

    def close(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings, *, migrate: bool = False) -> Database:
    """The database for writing: migrated first when ``migrate`` (the embedded SQLite
    default and `loopline db upgrade`), else checked. Unreachable is a usage error."""
    database = _connect(settings.database_url)
    try:
        if migrate:
            database.migrated = database.upgrade()
        else:
            database.check()
    except SchemaError:
        database.close()
        raise
    except Exception as exc:
        database.close()
        raise _unreachable(database, exc) from None
    return database


def open_for_reading(settings: Settings) -> Database | None:
    """The database for reading only, or None when there is none yet. Never creates or
    migrates anything: a command that only reads leaves no file behind."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        return None
    database = _connect(settings.database_url, read_only=True)
    try:
        found = database.revision()
    except Exception as exc:
        database.close()
        raise _unreachable(database, exc) from None
    if found is None:
        database.close()
        return None
    _refuse_newer(found, database.shown)
    return database


def _connect(url: str, *, read_only: bool = False) -> Database:
    if (path := sqlite_path(url)) is not None and not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                f"{VARIABLE}={url}: its folder cannot be made ({exc.strerror}); point it at "
                "a writable folder"
            ) from None
    return Database(url, read_only=read_only)


def _unreachable(database: Database, exc: Exception) -> SettingsError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SettingsError(
        f"{VARIABLE}={database.shown} cannot be used ({first}); start the database or fix the URL"
    )


def _refuse_newer(found: str | None, shown: str) -> None:
    if found is not None and found not in REVISIONS:
        raise SchemaError(
            f"the database at {shown} has schema {found}, newer than this loopline knows "
            f"(up to {REVISIONS[-1]}); upgrade loopline before using it"
        )


def _sqlite_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    with contextlib.suppress(Exception):  # a read-only connection cannot, and needs not
        cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
    cursor.close()


def _sqlite_begin(connection) -> None:
    write = connection.get_execution_options().get("loopline_write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
