"""schemathesis against the real server's OpenAPI document: no request it can make up
gets a 5xx, and every status code and content type the server answers is documented.

Bounded in time: part of `make test`, and a fresh set of examples each run.
"""

import json
import subprocess

import httpx
import pytest

from tests.conftest import VENV_BIN
from tests.serving.conftest import LABELLER

pytestmark = pytest.mark.xdist_group("served")  # shares the session's server

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,negative_data_rejection"
)


def test_fuzzing_predict_and_feedback_finds_no_5xx_and_no_undocumented_answer(served, tmp_path):
    document = httpx.get(f"{served.url}/docs.json").json()
    assert {"/predict", "/feedback"} <= set(document["paths"])
    for path in ("/predict", "/feedback"):
        operation = document["paths"][path]["post"]
        assert "requestBody" in operation
        assert {"400", "413", "415", "422"} <= set(operation["responses"])
    result = subprocess.run(
        [
            str(VENV_BIN / "schemathesis"),
            "run",
            f"{served.url}/docs.json",
            "--checks",
            CHECKS,
            "--include-path-regex",
            "^/(predict|feedback)$",
            "--max-time",
            "15",
            "--workers",
            "2",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
            "--no-color",
            "--header",
            f"X-API-Key: {LABELLER['X-API-Key']}",  # so that /feedback is fuzzed past its door
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "passed" in result.stdout.lower(), result.stdout[-2000:]
    json.dumps(document)  # the document itself is valid JSON
