"""``bentoml serve``'s arbiter imports the service module for the service's definition alone:
the model's engines and the stores are its workers' (torch, pandas and SQLAlchemy cost each
start 1.8 s of the arbiter's CPU, benchmarks/README.md, ``serve_start``)."""

from __future__ import annotations

import json
import subprocess
import sys

WORKERS_ONLY = {"torch", "pandas", "sqlalchemy", "mlflow", "PIL", "prefect", "kfp", "ray"}


def test_the_service_definition_imports_no_engine_and_no_store():
    code = (
        "import json, sys\n"
        "import loopline.serving.service\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {WORKERS_ONLY!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [], done.stdout
