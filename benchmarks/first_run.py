"""A new user's first run: `loopline run` of a one-step pipeline in a brand-new home, as a
whole process, against kfp.local doing the same in a brand-new folder.

Run: ``.venv/bin/python -m benchmarks.first_run [--repeat 5]``. Writes
``benchmarks/results/first_run.json``.

Each repeat, alternately:
- **loopline, fresh home:** a new ``LOOPLINE_HOME`` and ``HOME``, no Prefect server:
  ``loopline run one_step.py``. Also timed: from that command's start until the home's
  server, started in the background, has recorded the run (what the command waited for
  before issue 28 §3, when it waited for the server);
- **the same, no template:** ``LOOPLINE_PREFECT_TEMPLATE=off``, so that the home's server
  migrates its own database (the baseline of ``prefect_template``), timed until recorded;
- **kfp.local, fresh folder:** a plain script, ``kfp.local.init(SubprocessRunner(
  use_venv=False))`` and the same pipeline, as a kfp user runs it;
- **loopline ``--engine kfp-local``, fresh home:** loopline's CLI around kfp.local.
The home's server is stopped (untimed) after each loopline run.
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

from benchmarks.cli_latency import ONE_STEP, PLAIN_KFP_LOCAL, timed

RESULTS = Path(__file__).parent / "results"
BIN = Path(sys.executable).parent


def fresh(root: Path, name: str) -> tuple[Path, dict]:
    folder = root / name
    (folder / "user").mkdir(parents=True)
    (folder / "one_step.py").write_text(ONE_STEP.read_text())
    (folder / "plain_kfp_local.py").write_text(PLAIN_KFP_LOCAL)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LOOPLINE_"))}
    env.update(HOME=str(folder / "user"), LOOPLINE_HOME=str(folder / "home"))
    return folder, env


def recorded_after(folder: Path, env: dict, started: float, timeout: float = 600) -> float:
    """Seconds from ``started`` until the home's server is up with no run pending."""
    from loopline.core.settings import load_settings
    from loopline.pipelines.local import prefect_server, run_history

    settings = load_settings(env)
    deadline = time.monotonic() + timeout
    while prefect_server.running(settings) is None or run_history.pending(settings.prefect_home):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server of {folder} never recorded the run")
        time.sleep(0.1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    keys = ("loopline", "recorded", "recorded_migrating", "kfp_local", "cli_kfp")
    runs: dict[str, list[float]] = {key: [] for key in keys}
    loopline = str(BIN / "loopline")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.repeat):
            folder, env = fresh(root, f"loopline-{i}")
            started = time.perf_counter()
            runs["loopline"].append(timed([loopline, "run", str(folder / "one_step.py")], env))
            runs["recorded"].append(recorded_after(folder, env, started))
            subprocess.run([loopline, "server", "--stop"], env=env, capture_output=True)

            # The baseline of the template: a new home whose server migrates its database.
            folder, env = fresh(root, f"migrating-{i}")
            env["LOOPLINE_PREFECT_TEMPLATE"] = "off"
            started = time.perf_counter()
            timed([loopline, "run", str(folder / "one_step.py")], env)
            runs["recorded_migrating"].append(recorded_after(folder, env, started))
            subprocess.run([loopline, "server", "--stop"], env=env, capture_output=True)

            folder, env = fresh(root, f"kfp-{i}")
            plain = [sys.executable, "plain_kfp_local.py"]
            started = time.perf_counter()
            done = subprocess.run(plain, env=env, cwd=folder, capture_output=True, text=True)
            runs["kfp_local"].append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])

            folder, env = fresh(root, f"cli-kfp-{i}")
            command = [loopline, "run", str(folder / "one_step.py"), "--engine", "kfp-local"]
            runs["cli_kfp"].append(timed(command, env))
    load = os.getloadavg()
    results = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "command": f"python -m benchmarks.first_run --repeat {args.repeat}",
        "load_average_1_5_15": [round(v, 2) for v in load],
        **{
            key: {"median_s": statistics.median(v), "runs_s": [round(s, 2) for s in v]}
            for key, v in runs.items()
        },
    }
    ratio = results["loopline"]["median_s"] / results["kfp_local"]["median_s"]
    results["loopline_vs_kfp_local"] = round(ratio, 2)
    report(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "first_run.json").write_text(json.dumps(results, indent=2))


def report(r: dict) -> None:
    print(f"{r['machine']}, load {r['load_average_1_5_15']}\n{r['command']}\n")
    rows = [
        ("loopline run, fresh home", "loopline"),
        ("  ... until its server recorded the run", "recorded"),
        ("  ... the same, its server migrating (no template)", "recorded_migrating"),
        ("plain kfp.local script, fresh folder", "kfp_local"),
        ("loopline run --engine kfp-local, fresh home", "cli_kfp"),
    ]
    for label, key in rows:
        print(f"{label:52} {r[key]['median_s']:7.2f} s  {r[key]['runs_s']}")
    print(f"\nloopline's first run / kfp.local: {r['loopline_vs_kfp_local']:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
