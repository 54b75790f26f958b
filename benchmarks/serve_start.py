"""What a ``loopline serve`` start costs: CPU seconds of the server's processes and the
time until it is ready, median of N starts.

Run: ``.venv/bin/python -m benchmarks.serve_start [--repeat 5] [--against REV]``. Writes
``benchmarks/results/serve_start.json``.

A digits CNN is trained and made champion in a scratch LOOPLINE_HOME. Each start is
``start_server`` then ``wait_ready`` (``/readyz`` answers 200: the model is loaded), as
``loopline serve``, the demo and the tests do; then the CPU time (user + system) of the
``bentoml serve`` arbiter and of each API worker is read, and the server is stopped.

The same for a scikit-learn champion (``loopline-sklearn``: the churn example's model,
as ``benchmarks/serving_sklearn`` registers it), which needs no torch.

Baseline, in the same run: plain BentoML (``benchmarks/plain_bento.py``'s ``Plain``, one
``@bentoml.api`` over the same weights), what BentoML itself costs to start. With
``--against REV``, loopline at git revision REV too (its ``loopline/`` from ``git
archive``, put first on the servers' path): before and after a change, in one run. The
kinds take turns, in reversed order every other repeat, so a drift of this VM's speed
reaches them all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
SERVICE = "loopline.serving.service:Predictor"
PLAIN = "benchmarks.plain_bento:Plain"
# One start, measured in a process of its own so that ``--against``'s code is the one
# imported: the server's path, its working directory and this process's come from it.
ONE_START = """
import json, sys, time
from pathlib import Path
import psutil
from loopline.core.settings import load_settings
from loopline.serving.server import free_port, start_server

home, model, target, log = sys.argv[1:5]
settings = load_settings({"LOOPLINE_HOME": home, "LOOPLINE_MODEL_NAME": model})
started = time.perf_counter()
server = start_server(settings, port=free_port(), target=target, log_path=Path(log))
try:
    server.wait_ready()
    ready_s = time.perf_counter() - started
    arbiter = psutil.Process(server.process.pid)
    cpu = {"arbiter": [], "worker": [], "other": []}
    for process in [arbiter, *arbiter.children(recursive=True)]:
        times = process.cpu_times()
        command = " ".join(process.cmdline())
        kind = ("arbiter" if process.pid == arbiter.pid
                else "worker" if "_bentoml_impl.worker" in command else "other")
        cpu[kind].append(round(times.user + times.system, 3))
finally:
    server.stop()
print(json.dumps({"ready_s": round(ready_s, 3), "cpu_s": cpu}))
"""


def one_start(settings, target: str, log: Path, code: Path | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if code is not None:
        env["PYTHONPATH"] = str(code)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ONE_START,
            str(settings.home),
            settings.model_name,
            target,
            str(log),
        ],
        cwd=code or ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def checkout(revision: str, into: Path) -> Path:
    """``loopline/`` as it was at ``revision``, in a folder of its own."""
    archive = subprocess.run(
        ["git", "archive", revision, "loopline"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def summary(starts: list[dict]) -> dict:
    def median(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    arbiter = [s["cpu_s"]["arbiter"][0] for s in starts]
    workers = [w for s in starts for w in s["cpu_s"]["worker"]]
    return {
        "ready_s": median([s["ready_s"] for s in starts]),
        "arbiter_cpu_s": median(arbiter),
        "worker_cpu_s": median(workers),
        "runs": starts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", help="a git revision to measure too, e.g. HEAD~1")
    args = parser.parse_args()
    from benchmarks import serving, serving_sklearn
    from loopline.storage.registry import model_folder, reader

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "cnn").mkdir()
        (root / "sklearn").mkdir()
        network = serving.champion_home(root / "cnn")
        sklearn, _, _ = serving_sklearn.champion_home(root / "sklearn")
        champion = reader(network).champion(network.model_name)
        os.environ["BENCH_MODEL_FOLDER"] = str(model_folder(network, champion))
        homes = {"loopline": network, "loopline-sklearn": sklearn, "plain": network}
        code = checkout(args.against, root / "against") if args.against else None
        kinds = {"loopline": (SERVICE, None), "loopline-sklearn": (SERVICE, None)}
        if code is not None:
            kinds[f"loopline@{args.against}"] = (SERVICE, code)
            kinds[f"loopline-sklearn@{args.against}"] = (SERVICE, code)
            homes[f"loopline@{args.against}"] = network
            homes[f"loopline-sklearn@{args.against}"] = sklearn
        kinds["plain"] = (PLAIN, None)
        load_before = os.getloadavg()
        starts: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for n in range(args.repeat):
            order = list(kinds) if n % 2 == 0 else list(reversed(kinds))
            for kind in order:
                target, code = kinds[kind]
                start = one_start(homes[kind], target, root / f"{kind}.log", code)
                starts[kind].append(start)
                print(kind, json.dumps(start), flush=True)
                time.sleep(1)  # the last one's processes gone before the next one starts
    results = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m benchmarks.serve_start --repeat "
        + str(args.repeat)
        + (f" --against {args.against}" if args.against else ""),
        "load_average_1_5_15_before": [round(v, 2) for v in load_before],
        "load_average_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        **{kind: summary(runs) for kind, runs in starts.items()},
    }
    for kind in kinds:
        print(kind, {k: v for k, v in results[kind].items() if k != "runs"})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serve_start.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
