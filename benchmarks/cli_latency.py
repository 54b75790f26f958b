"""Everyday commands as a user feels them: each a whole process, median of N runs.

Run: ``.venv/bin/python -m benchmarks.cli_latency [--repeat 5]``. Writes
``benchmarks/results/cli_latency.json``.

In a fresh LOOPLINE_HOME and HOME (a training run populates it first):
- ``loopline --help`` and ``loopline status --json``;
- ``loopline run`` of a one-step pipeline, **cold** (the home's Prefect server stopped
  before each run, so the run starts it) and **warm** (the server up);
- an unchanged re-run of the training pipeline (``--workers 0 --epochs 2``), warm.

Baselines, in the same run: the interpreter alone (``python -c pass``), ``python -c
"import torch"`` (issue 29: a cached training re-run should cost no more), and the tools
underneath: a plain Prefect script running a one-task flow, against its own temporary
server (what every loopline command paid before) and against the running home server;
``kfp.local`` (``--engine kfp-local``) on the one-step pipeline and on a small
control-flow pipeline (a loop of 4 items, If/Else in each, a fan-in: 9 tasks); and a plain
kfp.local script running the one-step pipeline (``benchmarks/first_run``'s), as a kfp user
runs it.
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


# As benchmarks/first_run runs it: kfp.local's subprocess runner, no venv per task.
PLAIN_KFP_LOCAL = """
import sys
from kfp import local
sys.path.insert(0, ".")
from one_step import plus_one
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="./outputs")
assert plus_one(x=1).output == 2
"""


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def failed_or(measure, *args) -> dict:
    try:
        return measure(*args)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)[-500:]}


def server_up(env: dict, timeout: float = 600) -> None:
    """Wait until the home's Prefect server, started behind a cold run, answers."""
    from loopline.core.settings import load_settings
    from loopline.pipelines.local import prefect_server

    settings = load_settings(env)
    deadline = time.monotonic() + timeout
    while prefect_server.running(settings) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Prefect server of {settings.home} did not come up")
        time.sleep(0.2)


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
        plain_kfp = [
            sys.executable,
            "-c",
            f"import os; os.chdir({str(root)!r}); " + PLAIN_KFP_LOCAL,
        ]

        def stop_server() -> None:
            subprocess.run([*loopline, "server", "--stop"], env=env, capture_output=True)

        try:
            first = timed(training, env)  # populates the home and starts its server
            server_up(env)  # warm: the runs below find it answering
            results = {
                "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                "command": f"python -m benchmarks.cli_latency --repeat {n}",
                "first_training_run_s": first,
                "python_floor": repeat([sys.executable, "-c", "pass"], env, n),
                "import_torch": repeat([sys.executable, "-c", "import torch"], env, n),
                "help": repeat([*loopline, "--help"], env, n),
                "status_json": repeat([*loopline, "status", "--json"], env, n),
                "run_one_step_warm": repeat(one, env, n),
                "run_one_step_kfp_local": repeat([*one, *kfp_local], env, n),
                "plain_kfp_local_one_step": repeat(plain_kfp, env, n),
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
            # Prefect's temporary server gives up after its own start timeout on a loaded
            # machine: that baseline's failure is reported, and the rest kept.
            results["plain_prefect_temporary_server"] = failed_or(repeat, plain, temporary, n)
            timed(one, env)  # the home's server again, for the plain script to use
            server_up(env)  # a cold run does not wait for it (issue 28 §3)
            api = json.loads((root / "home" / "prefect" / "server.json").read_text())
            against = {**temporary, "PREFECT_API_URL": f"http://127.0.0.1:{api['port']}/api"}
            results["plain_prefect_running_server"] = failed_or(repeat, plain, against, n)
        finally:
            stop_server()
    results["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_latency.json").write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    print(f"{r['machine']}, load {r.get('load_average_1_5_15')}\n{r['command']}\n")
    rows = [
        ("python -c pass (floor)", "python_floor"),
        ('python -c "import torch" (baseline)', "import_torch"),
        ("loopline --help", "help"),
        ("loopline status --json", "status_json"),
        ("loopline run one-step, cold server", "run_one_step_cold"),
        ("loopline run one-step, warm server", "run_one_step_warm"),
        ("loopline run one-step, --engine kfp-local", "run_one_step_kfp_local"),
        ("plain kfp.local script, one-step", "plain_kfp_local_one_step"),
        ("loopline run 9-task control flow, warm server", "run_control_flow_warm"),
        ("loopline run 9-task control flow, kfp-local", "run_control_flow_kfp_local"),
        ("training re-run, all cached, warm", "training_rerun_cached"),
        ("plain Prefect one-task flow, temporary server", "plain_prefect_temporary_server"),
        ("plain Prefect one-task flow, running server", "plain_prefect_running_server"),
    ]
    print(f"{'command (whole process)':48} {'median s':>9}  runs")
    for label, key in rows:
        if key not in r:  # an earlier result file
            continue
        m = r[key]
        if "median_s" not in m:
            print(f"{label:48} {'failed':>9}  {m['error'].splitlines()[-1][:80]}")
            continue
        print(f"{label:48} {m['median_s']:9.2f}  {m['runs_s']}")


if __name__ == "__main__":
    main()
