"""Everyday commands as a user feels them: each a whole process, median of N runs.

Run: ``.venv/bin/python -m benchmarks.cli_latency [--repeat 5]``. Writes
``benchmarks/results/cli_latency.json``.

In a fresh LOOPLINE_HOME and HOME (a training run populates it first):
- ``loopline --help`` and ``loopline status --json``;
- ``loopline run`` of a one-step pipeline, **cold** (the home's Prefect server stopped
  before each run, so the run starts it) and **warm** (the server up);
- an unchanged re-run of the training pipeline (``--workers 0 --epochs 2``), warm.

Baselines, in the same run: the interpreter alone (``python -c pass``), and the tools
underneath: a plain Prefect script running a one-task flow, against its own temporary
server (what every loopline command paid before) and against the running home server;
and ``kfp.local`` (``--engine kfp-local``) on the one-step pipeline and on a small
control-flow pipeline (a loop of 4 items, If/Else in each, a fan-in: 9 tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
BIN = Path(sys.executable).parent
ONE_STEP = Path(__file__).parents[1] / "tests" / "pipelines" / "plus_one.py"
PLAIN_PREFECT = """
from prefect import flow, task


@task
def add(a: int, b: int) -> int:
    return a + b


@flow
def one_step(x: int = 1) -> int:
    return add(x, 1)


one_step()
"""


CONTROL_FLOW = """
from typing import List

from kfp import dsl


@dsl.component
def add(a: int, b: int) -> int:
    return a + b


@dsl.component
def total(xs: List[int]) -> int:
    return int(sum(xs))  # kfp.local hands List[int] over as floats


@dsl.pipeline
def control_flow(offset: int = 10) -> int:
    with dsl.ParallelFor([1, 2, 3, 4]) as item:
        value = add(a=item, b=offset)
        with dsl.If(value.output > 12):
            add(a=value.output, b=1)
    return total(xs=dsl.Collected(value.output)).output
"""


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def repeat(command: list[str], env: dict, times: int, before=None) -> dict:
    seconds = []
    for _ in range(times):
        if before:
            before()
        seconds.append(timed(command, env))
    return {"median_s": statistics.median(seconds), "runs_s": [round(s, 3) for s in seconds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "user").mkdir()
        (root / "one_step.py").write_text(ONE_STEP.read_text())
        (root / "plain_prefect.py").write_text(PLAIN_PREFECT)
        (root / "control_flow.py").write_text(CONTROL_FLOW)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
        env.update(
            HOME=str(root / "user"), LOOPLINE_HOME=str(root / "home"), LOOPLINE_PREFECT_PORT="4299"
        )
        loopline = [str(BIN / "loopline")]
        training = [*loopline, "run", "training", "--workers", "0", "--epochs", "2"]
        one = [*loopline, "run", str(root / "one_step.py"), "--no-cache"]
        loops = [*loopline, "run", str(root / "control_flow.py"), "--no-cache"]
        kfp_local = ["--engine", "kfp-local"]

        def stop_server() -> None:
            subprocess.run([*loopline, "server", "--stop"], env=env, capture_output=True)

        try:
            first = timed(training, env)  # populates the home and starts its server
            results = {
                "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                "command": f"python -m benchmarks.cli_latency --repeat {n}",
                "first_training_run_s": first,
                "python_floor": repeat([sys.executable, "-c", "pass"], env, n),
                "help": repeat([*loopline, "--help"], env, n),
                "status_json": repeat([*loopline, "status", "--json"], env, n),
                "run_one_step_warm": repeat(one, env, n),
                "run_one_step_kfp_local": repeat([*one, *kfp_local], env, n),
                "run_control_flow_warm": repeat(loops, env, n),
                "run_control_flow_kfp_local": repeat([*loops, *kfp_local], env, n),
                "training_rerun_cached": repeat(training, env, n),
                "run_one_step_cold": repeat(one, env, n, before=stop_server),
            }
            stop_server()
            plain = [sys.executable, str(root / "plain_prefect.py")]
            temporary = {
                **env,
                "PREFECT_HOME": str(root / "plain-prefect"),
                "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
            }
            results["plain_prefect_temporary_server"] = repeat(plain, temporary, n)
            timed(one, env)  # the home's server again, for the plain script to use
            api = json.loads((root / "home" / "prefect" / "server.json").read_text())
            against = {**temporary, "PREFECT_API_URL": f"http://127.0.0.1:{api['port']}/api"}
            results["plain_prefect_running_server"] = repeat(plain, against, n)
        finally:
            stop_server()
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_latency.json").write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    print(f"{r['machine']}\n{r['command']}\n")
    rows = [
        ("python -c pass (floor)", "python_floor"),
        ("loopline --help", "help"),
        ("loopline status --json", "status_json"),
        ("loopline run one-step, cold server", "run_one_step_cold"),
        ("loopline run one-step, warm server", "run_one_step_warm"),
        ("loopline run one-step, --engine kfp-local", "run_one_step_kfp_local"),
        ("loopline run 9-task control flow, warm server", "run_control_flow_warm"),
        ("loopline run 9-task control flow, kfp-local", "run_control_flow_kfp_local"),
        ("training re-run, all cached, warm", "training_rerun_cached"),
        ("plain Prefect one-task flow, temporary server", "plain_prefect_temporary_server"),
        ("plain Prefect one-task flow, running server", "plain_prefect_running_server"),
    ]
    print(f"{'command (whole process)':48} {'median s':>9}  runs")
    for label, key in rows:
        m = r[key]
        print(f"{label:48} {m['median_s']:9.2f}  {m['runs_s']}")


if __name__ == "__main__":
    main()
