"""Where `make test`'s time goes: the CPU every process of a command used, by kind.

Run: ``.venv/bin/python -m benchmarks.suite_profile [-- COMMAND ...]`` (default: the
suite as `make test` runs it). Writes ``benchmarks/results/suite_profile.json``.

The suite is CPU-bound on a 2-core machine (the cores are >95 % busy through it), so its
wall time is the CPU its processes use over two. Most of that CPU is in subprocesses a
test starts (servers, pipeline tasks, CLI commands), which ``--durations`` charges to the
test without saying what ran; this samples ``/proc`` twice a second and sums each
process's user + system time under a kind named from its command line. A process that
lives under half a second can be missed: the total is a floor. It also records how busy
the cores were, minute by minute: an idle core in a CPU-bound suite is a test sleeping,
or one worker waiting for the other at the end. With the default command it also names
the tests that used the most CPU inside the pytest workers (``benchmarks.per_test_cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import per_test_cpu

RESULTS = Path(__file__).parent / "results"
SUITE = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-n",
    "2",
    "--dist",
    "loadgroup",
    "-p",
    "benchmarks.per_test_cpu",
]
TICKS = os.sysconf("SC_CLK_TCK")

# (kind, a fragment of the command line): the first match names a process.
KINDS = (
    ("pytest workers (the tests' own code)", "exec(eval(sys.stdin"),
    ("pytest's main process", "-m pytest"),
    ("Prefect servers", "prefect_supervisor --serve"),
    ("Prefect supervisors", "prefect_supervisor"),
    ("pipeline tasks (kfp.local subprocesses)", "multiprocessing.forkserver"),
    ("pipeline tasks (kfp executor)", "kfp.dsl.executor_main"),
    ("kfp.local's pip install", "pip install"),
    ("BentoML service workers", "_bentoml_impl.worker"),
    ("BentoML arbiters (bentoml serve)", "bentoml serve"),
    ("Ray", "ray"),
    ("loopline CLI commands", "bin/loopline"),
    ("catalog sandboxes", "loopline.catalog"),
    ("MLflow", "mlflow"),
    ("Prefect workers and other Prefect", "prefect"),
    ("python -c scripts of tests", "python -c"),
    ("chromium", "chrom"),
    ("PostgreSQL", "postgres"),
)


def kind(command: str) -> str:
    return next((name for name, fragment in KINDS if fragment in command), "other")


def busy_idle() -> tuple[float, float]:
    """The machine's busy and idle CPU seconds since boot (/proc/stat's first line)."""
    user, nice, system, idle, iowait, *rest = map(int, Path("/proc/stat").read_text().split()[1:11])
    return (user + nice + system + sum(rest[:3])) / TICKS, (idle + iowait) / TICKS


def whose(pid: int) -> tuple[str | None, list[int]]:
    """The pytest worker a process says it came from (its PYTEST_XDIST_WORKER), and its
    ancestors' pids, for one whose environment was cleared (a sandbox)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        environ = []
    worker = next((v[20:].decode() for v in environ if v.startswith(b"PYTEST_XDIST_WORKER=")), None)
    ancestors = []
    while pid > 1 and len(ancestors) < 32:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
        ancestors.append(pid)
    return worker, ancestors


def sample(seen: dict, stop: threading.Event, me: int, since: float, minutes: list) -> None:
    """Keep each process's CPU seconds at first sight and latest, keyed by pid and start
    time; one started after ``since`` (ticks since boot) is counted from its start. Append
    the machine's (busy, idle) CPU seconds to ``minutes`` once a minute."""
    mark, last = time.monotonic(), busy_idle()
    while not stop.is_set():
        if time.monotonic() - mark >= 60:
            now = busy_idle()
            minutes.append((now[0] - last[0], now[1] - last[1]))
            mark, last = time.monotonic(), now
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rfind(")") + 2 :].split()
                key = (pid, fields[19])  # a reused pid is another process
                cpu = (int(fields[11]) + int(fields[12])) / TICKS
                if key not in seen:
                    if int(pid) == me:
                        continue
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    first = 0.0 if int(fields[19]) >= since else cpu
                    line = raw.replace(b"\0", b" ").decode(errors="replace")
                    origin = (int(fields[19]) / TICKS, *whose(int(pid)))
                    seen[key] = [line, first, cpu, origin]
                seen[key][2] = cpu
            except (OSError, IndexError, ValueError):
                continue
        stop.wait(0.5)
    now = busy_idle()  # the last, partial minute
    minutes.append((now[0] - last[0], now[1] - last[1]))


def charge(rows: list[dict], seen: dict) -> list[tuple[float, str, dict[str, float]]]:
    """Every test's CPU with its subprocesses', most first, and by kind
    (``per_test_cpu.charged``)."""
    workers = {row["pid"]: row["worker"] for row in rows}
    started = []
    for (pid, _), (line, first, last, (start, worker, ancestors)) in seen.items():
        worker = worker or next((workers[a] for a in ancestors if a in workers), None)
        if worker and last > first and int(pid) not in workers:  # a worker's own: in rows
            started.append((last - first, start, worker, kind(line).split(" (")[0]))
    charged = per_test_cpu.charged(rows, started)
    return sorted(((sum(k.values()), test, k) for test, k in charged.items()), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="*", help="what to profile (default: the suite)")
    command = parser.parse_args().command or SUITE
    seen: dict = {}
    minutes: list = []
    stop = threading.Event()
    load = os.getloadavg()
    since = float(Path("/proc/uptime").read_text().split()[0]) * TICKS
    arguments = (seen, stop, os.getpid(), since, minutes)
    sampler = threading.Thread(target=sample, args=arguments, daemon=True)
    sampler.start()
    per_test = Path(tempfile.mkdtemp(prefix="test-cpu-"))  # benchmarks.per_test_cpu writes here
    os.environ[per_test_cpu.FOLDER] = str(per_test)
    started = time.monotonic()
    code = subprocess.call(command)
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    by_kind: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for line, first, last, _ in seen.values():
        if line and last > first:  # kernel threads have no command line
            by_kind[kind(line)][0] += last - first
            by_kind[kind(line)][1] += 1
    total = sum(cpu for cpu, _ in by_kind.values())
    rows = sorted(by_kind.items(), key=lambda item: -item[1][0])
    print(f"\n{' '.join(command[-6:])}: exit {code}, {wall:.0f} s wall, {total:.0f} CPU s")
    for name, (cpu, count) in rows:
        print(f"{cpu:8.1f} s {100 * cpu / max(total, 1):5.1f} %  {count:5d} processes  {name}")
    busy = [round(100 * b / max(b + i, 1e-9)) for b, i in minutes]
    idle = sum(i for _, i in minutes)
    print(f"cores busy, % by minute: {' '.join(map(str, busy))}; idle: {idle:.0f} core-seconds")
    heaviest = per_test_cpu.heaviest(per_test)
    with_children = charge(per_test_cpu.tests(per_test), seen)
    shutil.rmtree(per_test, ignore_errors=True)
    if heaviest:
        print("the tests that used the most CPU in the pytest workers themselves:")
        for cpu, test in heaviest:
            print(f"{cpu:8.1f} s  {test}")
        print("the tests that used the most CPU with the processes they started:")
        for cpu, test, kinds in with_children[:30]:
            top = sorted(kinds.items(), key=lambda item: -item[1])[:3]
            print(f"{cpu:8.1f} s  {test}")
            print(" " * 12 + ", ".join(f"{name} {used:.0f}" for name, used in top))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "suite_profile.json").write_text(
        json.dumps(
            {
                "command": command,
                "exit": code,
                "wall_s": round(wall, 1),
                "cpu_s": round(total, 1),
                "machine": f"{platform.node()} {os.cpu_count()} cores",
                "load_before": load,
                "busy_percent_by_minute": busy,
                "idle_core_s": round(idle),
                "heaviest_tests_in_workers": [{"test": t, "cpu_s": c} for c, t in heaviest],
                "heaviest_tests_with_subprocesses": [
                    {
                        "test": t,
                        "cpu_s": round(c, 1),
                        "kinds": {n: round(v, 1) for n, v in k.items()},
                    }
                    for c, t, k in with_children
                ],
                "kinds": {name: {"cpu_s": round(c, 1), "processes": n} for name, (c, n) in rows},
            },
            indent=2,
        )
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
