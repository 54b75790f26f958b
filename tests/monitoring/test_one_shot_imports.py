"""A one-shot `loopline monitor` (a CronJob's) loads what judging needs and none of the
engines a retraining needs: torch alone took 1.2-2.5 s of the process and 190 MB of its
peak memory (benchmarks/README.md, `drift`). They are imported when a retraining starts."""

from __future__ import annotations

import subprocess
import sys

ENGINES = {"torch", "mlflow", "prefect", "kfp", "ray", "bentoml"}


def test_the_monitor_imports_no_engine_of_training_registry_or_pipelines():
    code = (
        "import sys\n"
        "import loopline.cli.monitor\n"
        "from loopline.monitoring.monitor import Monitor\n"
        "from loopline.monitoring.policy import load_policy\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {ENGINES!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
