"""Task output cache: keyed on the component spec plus the content of its resolved inputs.

Runtime placeholders (run and task ids) are not part of the key: a cached artifact keeps
the lineage of the run that produced it. Entries point at artifacts that already exist;
an entry whose files are gone is a miss.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from threading import Lock
from typing import Any

from loopline.core.lineage import content_hash

PLACEHOLDER_PREFIX = "{{$"


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
        payload = json.dumps([component, executor, params, inputs], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        path = self.folder / f"{key}.json"
        if not path.exists():
            return None
        entry = json.loads(path.read_text())
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
