"""MLflow access: experiments and runs for tracking, and the model registry.

Versions are immutable; the ``champion`` alias is the only thing that moves, and MLflow
moves it in one database write. Every version is an MLflow Model folder whose sha256
manifest is a version tag, checked before each load (``loopline.ml.model_contract``);
loopline's own networks are safetensors + architecture JSON, never a pickle.

:class:`Registry` reads and writes through MLflow's client. :func:`reader` gives the
reads that everyday commands need (the champion, a version, a version by content) and,
for the default local SQLite store, answers them with plain SQL on MLflow's model
registry tables: importing MLflow alone takes 2 s, more than `loopline status` may take.
A missing store reads as empty and is never created by a read. The contract tests run
both readers over one registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings, sqlite_path

CHAMPION = "champion"
METRIC_TAG = "metric."
CONTENT_TAG = "loopline.content_hash"
HISTORY_TAG = "loopline.champion_history"  # the versions that held the alias, oldest first


class RegistryError(LooplineError, RuntimeError):
    """A registry operation that cannot be done (e.g. no earlier champion to roll back to)."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def metrics(self) -> dict[str, float]:
        return {
            k.removeprefix(METRIC_TAG): float(v)
            for k, v in self.tags.items()
            if k.startswith(METRIC_TAG)
        }


class RegistryReader(Protocol):
    def champion(self, name: str) -> VersionInfo | None: ...
    def version(self, name: str, version: str) -> VersionInfo: ...
    def find_version(self, name: str, content_hash: str) -> VersionInfo | None: ...
    def find_by_tag(self, name: str, key: str, value: str) -> VersionInfo | None: ...
    def champion_history(self, name: str) -> list[str]: ...
    def models(self) -> list[str]: ...


def reader(settings: Settings) -> RegistryReader:
    """The cheapest reader for the configured store (see the module's docstring)."""
    path = sqlite_path(settings.tracking_uri)
    return SqliteReader(path) if path is not None else Registry(settings)


def model_folder(settings: Settings, info: VersionInfo) -> Path:
    """A local folder with the version's model files. A local source is that folder,
    found without importing MLflow; any other source (s3://, an MLflow server) is
    downloaded through it."""
    if info.source.startswith("file://"):
        local = Path(unquote(urlparse(info.source).path))
        if local.is_dir():
            return local
    return Registry(settings).download(info)


class Registry:
    def __init__(self, settings: Settings):
        from mlflow import MlflowClient

        settings.home.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        path = sqlite_path(settings.tracking_uri)
        if path is None:
            self.client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
            return
        with _creation_lock(path):
            # Concurrent first commands would both create and migrate the database: the
            # client (MLflow 3.17 opens its tracking store at once) and the first query of
            # the registry store create it, one command at a time.
            self.client = MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
            self.client.search_experiments(max_results=1)
            self.client.search_registered_models(max_results=1)

    def start_run(self, experiment: str, *, params: dict, tags: dict[str, str]) -> str:
        run = self.client.create_run(self._experiment_id(experiment), tags=tags)
        for key, value in params.items():
            self.client.log_param(run.info.run_id, key, value)
        return run.info.run_id

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        if not self.settings.tracking_uri.startswith(("sqlite:", "file:")):
            return self.client.create_experiment(name)  # a tracking server stores artifacts
        # With a SQLite store MLflow would put artifacts under ./mlruns of the current
        # directory; pin them under LOOPLINE_HOME instead.
        location = (self.settings.mlflow_artifact_root / name).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def log_files(self, run_id: str, folder: Path, artifact_path: str) -> str:
        self.client.log_artifacts(run_id, str(folder), artifact_path)
        return self.artifact_uri(run_id, artifact_path)

    def artifact_uri(self, run_id: str, artifact_path: str) -> str:
        return f"{self.client.get_run(run_id).info.artifact_uri}/{artifact_path}"

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

    def create_version(
        self, name: str, *, source: str, run_id: str, tags: dict[str, str]
    ) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower():
                raise
        version = self.client.create_model_version(name, source, run_id, tags=tags)
        return self._info(version)

    def find_version(self, name: str, content_hash: str) -> VersionInfo | None:
        """The version whose model files have this content hash, if any."""
        return self.find_by_tag(name, CONTENT_TAG, content_hash)

    def find_by_tag(self, name: str, key: str, value: str) -> VersionInfo | None:
        """The newest version tagged ``key=value``, if any."""
        found = self.client.search_model_versions(f"name = '{name}' and tags.`{key}` = '{value}'")
        return self._info(max(found, key=lambda v: int(v.version))) if found else None

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)

    def champion(self, name: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(name, CHAMPION))
        except MlflowException:
            return None

    def version(self, name: str, version: str) -> VersionInfo:
        return self._info(self.client.get_model_version(name, version))

    def promote(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION, version)
        history = self.champion_history(name)
        if not history or history[-1] != version:
            self._save_history(name, [*history, version])

    def rollback(self, name: str) -> tuple[str, str]:
        """Move ``champion`` back to the version that held it before; (from, to)."""
        current = self.champion(name)
        history = self.champion_history(name)
        if current is None or len(history) < 2 or history[-1] != current.version:
            raise RegistryError(
                f"model {name!r} has no earlier champion recorded to roll back to; "
                "name one with `loopline rollback --to VERSION`"
            )
        previous = history[-2]
        self.client.set_registered_model_alias(name, CHAMPION, previous)
        self._save_history(name, history[:-1])
        return current.version, previous

    def champion_history(self, name: str) -> list[str]:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(name).tags or {}
        except MlflowException:
            return []
        return json.loads(tags.get(HISTORY_TAG, "[]"))

    def models(self) -> list[str]:
        """Every registered model's name."""
        return sorted(m.name for m in self.client.search_registered_models())

    def _save_history(self, name: str, history: list[str]) -> None:
        self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-100:]))

    def download(self, info: VersionInfo) -> Path:
        """A local folder with the version's model files (the folder itself when local)."""
        import mlflow.artifacts

        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=info.source, tracking_uri=self.settings.tracking_uri
            )
        )

    def local_artifacts(self, run_id: str, artifact_path: str) -> Path:
        """A local folder with a run's artifacts under ``artifact_path`` (the folder itself
        when the store is local)."""
        uri = self.artifact_uri(run_id, artifact_path)
        if uri.startswith("file://"):
            return Path(unquote(urlparse(uri).path))
        return self.download(VersionInfo("", "", uri, run_id, {}))

    def _info(self, version) -> VersionInfo:
        return VersionInfo(
            name=version.name,
            version=str(version.version),
            source=version.source,
            run_id=version.run_id,
            tags=dict(version.tags or {}),
        )


@contextlib.contextmanager
def _creation_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


DELETED = "Deleted_Internal"  # MLflow marks a deleted version instead of removing its row


class SqliteReader:
    """Registry reads straight from a local MLflow SQLite store, opened read-only."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def champion(self, name: str) -> VersionInfo | None:
        row = self._one(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (name, CHAMPION),
        )
        return self._version(name, str(row[0])) if row else None

    def version(self, name: str, version: str) -> VersionInfo:
        found = self._version(name, version)
        if found is None:
            raise RegistryError(f"model {name!r} has no version {version}")
        return found

    def find_version(self, name: str, content_hash: str) -> VersionInfo | None:
        return self.find_by_tag(name, CONTENT_TAG, content_hash)

    def find_by_tag(self, name: str, key: str, value: str) -> VersionInfo | None:
        row = self._one(
            "SELECT v.version FROM model_versions v JOIN model_version_tags t"
            " ON t.name = v.name AND t.version = v.version"
            " WHERE v.name = ? AND t.key = ? AND t.value = ?"
            " AND v.current_stage != ? ORDER BY v.version DESC LIMIT 1",
            (name, key, value, DELETED),
        )
        return self._version(name, str(row[0])) if row else None

    def champion_history(self, name: str) -> list[str]:
        row = self._one(
            "SELECT value FROM registered_model_tags WHERE name = ? AND key = ?",
            (name, HISTORY_TAG),
        )
        return json.loads(row[0]) if row else []

    def models(self) -> list[str]:
        """Every registered model's name."""
        if self._one("SELECT 1 FROM registered_models LIMIT 1", ()) is None:
            return []
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM registered_models ORDER BY name")]

    def _version(self, name: str, version: str) -> VersionInfo | None:
        row = self._one(
            "SELECT source, run_id FROM model_versions"
            " WHERE name = ? AND version = ? AND current_stage != ?",
            (name, int(version), DELETED),
        )
        if row is None:
            return None
        with self._connect() as db:
            tags = dict(
                db.execute(
                    "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
                    (name, int(version)),
                ).fetchall()
            )
        return VersionInfo(name, str(version), row[0], row[1], tags)

    def _one(self, query: str, params: tuple) -> tuple | None:
        if not self.path.exists():
            return None
        with self._connect() as db:
            try:
                return db.execute(query, params).fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # created, not yet migrated
                    return None
                raise

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            yield db
        finally:
            db.close()
