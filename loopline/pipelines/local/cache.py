"""Task output cache: keyed on the component spec plus the content of its resolved inputs.

Runtime placeholders (run and task ids) are not part of the key: a cached artifact keeps
the lineage of the run that produced it. Entries point at artifacts that already exist;
an entry whose files are gone is a miss.

A string parameter that names a local file or folder (``dataset=/data/cancer.csv``) is
keyed on that path's content too, not on the string alone: a scheduled run after the CSV
was edited in place ingests it afresh. Size, mtime, ctime and inode are the fast check;
only when they change is the content hashed again (that hash is the key, so a touched but
unchanged file is still a hit). Past 8 GiB the stat data is the key; past 100,000 files
(a home, a repository: no dataset) the path is, with a warning. Other strings, remote URIs
included, are keyed as they are: no loopline source reads a remote URI, and Kubeflow's own
cache keys on the string.

Caching is across runs: a task is never served from an entry its own run wrote, so every
iteration of a loop, and every repeat of an identical task, runs in each run. Kubeflow keys
its cache on a fingerprint of the task and the pipeline's name, not the run
(``backend/src/v2/cacheutils/cache.go``, ``GetExecutionCache``), and writes the entry when a
task succeeds; so there, an identical task that starts after another finished in the same
run (a loop with ``parallelism=1``) may be served, while iterations that start together all
run. loopline makes that one rule that does not depend on timing: within a run, a task runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from threading import Lock
from typing import Any

from loopline.core.lineage import content_hash

PLACEHOLDER_PREFIX = "{{$"
# A path parameter's limits: past MAX_FILES files it is keyed by its path (a home or a
# repository is no dataset), past MAX_HASHED_BYTES by its stat data, never read.
MAX_FILES = 100_000
MAX_HASHED_BYTES = 8 << 30

log = logging.getLogger("loopline.run")


class TaskCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._hashes: dict[tuple, str] = {}
        self._lock = Lock()

    def key(self, component: dict, executor: dict, parameters: dict, artifacts: dict) -> str:
        params = {k: v for k, v in parameters.items() if not _is_placeholder(v)}
        inputs = {
            name: [self._artifact_hash(a) for a in (value if isinstance(value, list) else [value])]
            for name, value in artifacts.items()
        }
        files = {
            name: self.path_hash(path)
            for name, value in params.items()
            if (path := local_path(value)) is not None
        }
        payload = [component, executor, params, inputs]
        if files:  # keys of tasks without path parameters stay as they were
            payload.append(files)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def path_hash(self, path: Path) -> str:
        """The content hash of a local file or folder, recomputed only when its size,
        mtime, ctime or inode (any file's, for a folder) changed since the last time this
        cache hashed it, in this process or an earlier one."""
        found = _signature(path)
        if found is None:  # a home or a repository, not a dataset: walking it is the cost
            log.warning(
                "a parameter names %s, a folder of more than %d files: the task cache keys "
                "it by its path only; pass --no-cache when its content changed",
                path,
                MAX_FILES,
            )
            return f"path:{path}"
        signature, size = found
        if size > MAX_HASHED_BYTES:  # not read again on every change: any change is a miss
            return f"stat:{signature}"
        memo = self.folder / "paths" / f"{hashlib.sha256(str(path).encode()).hexdigest()}.json"
        with self._lock:
            try:
                known = json.loads(memo.read_text())
            except (OSError, ValueError):
                known = {}
            if known.get("signature") == signature and known.get("path") == str(path):
                return known["hash"]
            digest = content_hash(path)
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f"{memo.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps({"path": str(path), "signature": signature, "hash": digest}))
            tmp.replace(memo)
            return digest

    def get(self, key: str, *, run: str | None = None) -> dict | None:
        """The entry for ``key``; none if ``run`` (the asking task's run) wrote it."""
        path = self.folder / f"{key}.json"
        if not path.exists():
            return None
        entry = json.loads(path.read_text())
        if run is not None and entry.get("run") == run:
            return None
        # Metrics-type artifacts live in metadata and may have no file at all.
        if not all(Path(a["path"]).exists() for a in _artifacts(entry) if a.get("had_file", True)):
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Unique per writer: concurrent tasks of one process share its pid.
        tmp = self.folder / f"{key}.json.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(entry, indent=2, default=str))
        tmp.replace(self.folder / f"{key}.json")  # atomic: readers never see half an entry

    def _artifact_hash(self, artifact) -> str:
        path = Path(artifact.path)
        if not path.exists():
            return f"uri:{artifact.uri}"
        stat = path.stat()
        memo = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if memo not in self._hashes:
                self._hashes[memo] = content_hash(path)
            return self._hashes[memo]


def _is_placeholder(value: object) -> bool:
    return isinstance(value, str) and PLACEHOLDER_PREFIX in value


def local_path(value: object) -> Path | None:
    """The existing local file or folder a string parameter names, resolved; else None
    (a URI, a built-in dataset's name, any other text, or a filesystem root)."""
    if not isinstance(value, str) or not value or "\n" in value or "://" in value:
        return None
    if len(value) > 4096:
        return None
    try:
        path = Path(value).expanduser()
        if not path.exists():
            return None
        path = path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return None if path.parent == path else path


def _signature(path: Path) -> tuple[str, int] | None:
    """A cheap digest of a file's or folder's stat data (what the fast check compares) and
    its size in bytes; None for a folder of more than :data:`MAX_FILES` files."""
    files = [path] if path.is_file() else []
    if not files:
        for file in path.rglob("*"):
            if file.is_file():
                files.append(file)
                if len(files) > MAX_FILES:
                    return None
        files.sort()
    digest, size = hashlib.sha256(), 0
    for file in files:
        stat = file.stat()
        fields = (file.relative_to(path) if file != path else file.name, stat.st_size)
        fields += (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        digest.update(repr(fields).encode())
        size += stat.st_size
    return digest.hexdigest(), size


def _artifacts(entry: dict) -> list[dict]:
    return [a for items in entry["artifacts"].values() for a in items]


def to_cache(parameters: dict, artifacts: dict, *, task: str, run: str) -> dict:
    """A cache entry for a task's outputs: parameter values and artifact descriptions."""

    def describe(artifact) -> dict:
        return {
            "name": artifact.name,
            "uri": artifact.uri,
            "path": artifact.path,
            "had_file": Path(artifact.path).exists(),
            "metadata": artifact.metadata,
            "type": {
                "schemaTitle": artifact.schema_title,
                "schemaVersion": artifact.schema_version,
            },
        }

    return {
        "task": task,
        "run": run,
        "parameters": parameters,
        "artifacts": {
            k: [describe(a) for a in (v if isinstance(v, list) else [v])]
            for k, v in artifacts.items()
        },
        "lists": [k for k, v in artifacts.items() if isinstance(v, list)],
    }


def from_cache(entry: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (parameters, artifacts) an entry describes, artifacts rebuilt as KFP objects."""
    from kfp.dsl.executor import create_artifact_instance

    artifacts = {}
    for key, items in entry["artifacts"].items():
        rebuilt = [
            create_artifact_instance({k: v for k, v in a.items() if k not in ("path", "had_file")})
            for a in items
        ]
        artifacts[key] = rebuilt if key in entry["lists"] else rebuilt[0]
    return dict(entry["parameters"]), artifacts
