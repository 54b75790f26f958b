"""Lineage carried by every artifact: run, input content hashes, code version, parameters.

Each artifact directory gets a ``lineage.json``; KFP artifact metadata gets the same dict.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from loopline.core.settings import read as read_setting

LINEAGE = "lineage.json"


def content_hash(path: Path) -> str:
    """SHA-256 over a file, or over a directory's relative paths and bytes (lineage excluded)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file.name == LINEAGE:
            continue
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def code_version() -> str:
    """The git commit of loopline's code; images set LOOPLINE_GIT_SHA at build time."""
    if sha := read_setting("LOOPLINE_GIT_SHA"):
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return (sha + ("-dirty" if dirty else "")) if out.returncode == 0 and sha else "unknown"


def record(
    artifact: Path,
    *,
    run_id: str,
    step: str,
    inputs: dict[str, str],
    parameters: dict,
) -> dict:
    """Write ``lineage.json`` into the artifact directory and return the same dict."""
    lineage = {
        "run_id": run_id,
        "step": step,
        "inputs": inputs,
        "code_version": code_version(),
        "parameters": parameters,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    lineage["content_hash"] = content_hash(artifact)
    (Path(artifact) / LINEAGE).write_text(json.dumps(lineage, indent=2))
    return lineage


def read(artifact: Path) -> dict:
    return json.loads((Path(artifact) / LINEAGE).read_text())
