"""checkov over what is deployed: the three overlays as `loopline deploy` renders them and
as `kubectl apply -k` takes them raw, and the Dockerfile. Zero failed checks; every skip
is written next to what it skips, with its reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from loopline.cli import deploy
from loopline.core.settings import load_settings
from tests.infra.test_manifests import ROOT, raw

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

pytestmark = [
    pytest.mark.skipif(not CHECKOV.exists(), reason="make test installs checkov (.venv-checkov)"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="apt-get install kubectl"),
]


def test_checkov_finds_no_failed_check_in_the_overlays_and_the_dockerfile(tmp_path):
    settings = load_settings({"LOOPLINE_HOME": str(tmp_path / "home")})
    for overlay in deploy.overlays():
        (tmp_path / f"{overlay}.yaml").write_text(deploy.to_yaml(deploy.render(overlay, settings)))
        (tmp_path / f"raw-{overlay}.yaml").write_text(deploy.to_yaml(raw(overlay)))
    shutil.copy(ROOT / "infra" / "docker" / "Dockerfile", tmp_path / "Dockerfile")
    done = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "dockerfile",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(tmp_path)},  # its update check's cache stays here
    )
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    failed = [
        f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    for report in reports:
        assert report["summary"]["passed"] > 0
        for skipped in report["results"]["skipped_checks"]:
            assert len(skipped["check_result"].get("suppress_comment", "")) > 20, skipped
