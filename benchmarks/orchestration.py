"""Per-step orchestration overhead: loopline's Prefect engine vs kfp.local, one run.

Run: ``.venv/bin/python -m benchmarks.orchestration [--steps 10] [--training]``.
Writes ``benchmarks/results/orchestration.json``. (No ``from __future__ import annotations``:
KFP reads the component annotations as types.)

Chains of 1 and of N trivial steps (``add``) run on:
1. kfp.local (SubprocessRunner, current environment): one fresh Python process per step;
2. the Prefect engine with the worker-process pool (the default);
3. the Prefect engine running components in-process.
Caching is off, so every step executes. The per-step overhead is the marginal cost,
(T(N) - T(1)) / (N - 1); what remains of T(1) is the run's fixed cost (flow start and end).
A warm-up run first keeps Prefect's temporary server start and the pool's first fork out
of the numbers. ``--training`` also times an
unchanged re-run of the training pipeline, which the cache serves.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from kfp import dsl

from loopline.core.settings import load_settings
from loopline.pipelines.local import prefect_server
from loopline.pipelines.local.kfp_local import run_local
from loopline.pipelines.local.prefect_engine import PrefectEngine

RESULTS = Path(__file__).parent / "results"


@dsl.component
def add(a: int, b: int) -> int:
    return a + b


def chain_pipeline(steps: int):
    @dsl.pipeline(name=f"chain-{steps}")
    def chain(x: int = 0) -> int:
        task = add(a=x, b=1)
        for _ in range(steps - 1):
            task = add(a=task.output, b=1)
        return task.output

    return chain


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--training", action="store_true", help="also time a cached training re-run"
    )
    args = parser.parse_args()
    pipelines = {1: chain_pipeline(1), args.steps: chain_pipeline(args.steps)}
    results = {
        "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
        "command": f"python -m benchmarks.orchestration --steps {args.steps}"
        + (" --training" if args.training else ""),
        "steps": args.steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"LOOPLINE_HOME": tmp})
        results["kfp_local"] = measure(lambda p: run_local(p, {"x": 0}, settings), pipelines)
        for runtime in ("process", "inprocess"):
            engine = PrefectEngine(settings, runtime=runtime)
            engine.run(pipelines[1], {"x": 0}, enable_cache=False)  # warm-up
            results[f"prefect_{runtime}"] = measure(
                lambda p, e=engine: e.run(p, {"x": 0}, enable_cache=False), pipelines
            )
            engine.close()
        if args.training:
            results["training"] = cached_training_rerun(settings)
        prefect_server.stop(settings)  # the scratch home's Prefect server, before it goes
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orchestration.json").write_text(json.dumps(results, indent=2))


def measure(run, pipelines: dict) -> dict:
    """Total seconds for 1 and N steps; marginal per-step and fixed per-run costs."""
    totals = {}
    for steps, pipeline in pipelines.items():
        seconds, result = timed(lambda p=pipeline: run(p))
        assert result.succeeded and result.outputs["Output"] == steps, result.error
        totals[steps] = seconds
    (one, t1), (n, tn) = sorted(totals.items())
    per_step = (tn - t1) / (n - 1)
    return {"total_1_s": t1, f"total_{n}_s": tn, "per_step_s": per_step, "fixed_s": t1 - per_step}


def cached_training_rerun(settings) -> dict:
    engine = PrefectEngine(settings)
    arguments = {"epochs": 3, "workers": 1}
    first, result = timed(lambda: engine.run("training", arguments))
    assert result.succeeded, result.error
    again, result = timed(lambda: engine.run("training", arguments))
    assert result.succeeded, result.error
    engine.close()
    return {
        "first_run_s": first,
        "cached_rerun_s": again,
        "cached_tasks": [r.name for r in result.records if r.cached],
    }


def report(r: dict) -> None:
    print(f"{r['machine']}\n{r['command']}\n")
    n = r["steps"]
    base = r["kfp_local"]["per_step_s"]
    print(
        f"{'engine':34} {f'{n} steps s':>10} {'per step s':>11} {'fixed s':>8} {'per step vs kfp.local':>22}"
    )
    for name, key in (
        ("kfp.local (subprocess per step)", "kfp_local"),
        ("Prefect engine, process pool", "prefect_process"),
        ("Prefect engine, in-process", "prefect_inprocess"),
    ):
        m = r[key]
        print(
            f"{name:34} {m[f'total_{n}_s']:10.2f} {m['per_step_s']:11.4f} {m['fixed_s']:8.2f} "
            f"{base / m['per_step_s']:21.0f}x"
        )
    if "training" in r:
        t = r["training"]
        print(
            f"\ntraining pipeline: first run {t['first_run_s']:.1f} s, unchanged re-run "
            f"{t['cached_rerun_s']:.2f} s (cached: {', '.join(t['cached_tasks'])})"
        )


if __name__ == "__main__":
    main()
