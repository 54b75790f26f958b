"""Drift detection at scale: loopline's monitor vs one plain Evidently run, one run.

Run: ``.venv/bin/python -m benchmarks.drift [--rows 1000000] [--columns 64]``.
Writes ``benchmarks/results/drift.json``.

Reference and window are ``rows`` x ``columns`` numeric frames from one seed. A third of
the window's columns are shifted (mean shifts of 0.2-1.0 standard deviations, or a
scale change); the rest are not. Each way runs in its own child process, so its peak
memory (max RSS, data included) is its own:

1. plain Evidently: ``Report([DataDriftPreset()])`` over the full window and reference;
2. loopline: ``monitoring.drift.detect_drift``, what ``loopline monitor`` runs. It hands
   Evidently a uniform random sample of ``max_rows`` rows per side (default 20,000):
   a drift test's verdict needs a sample, not every row.

Agreement is the share of columns whose drift verdict matches the full run's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def make_data(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(columns)]
    loc = rng.uniform(-5, 5, columns)
    scale = rng.uniform(0.5, 3, columns)
    reference = rng.normal(loc, scale, (rows, columns)).astype(np.float32)
    current = rng.normal(loc, scale, (rows, columns)).astype(np.float32)
    shifted = []
    for i in range(0, columns, 3):  # every third column drifts, by a varying amount
        kind = (i // 3) % 4
        if kind == 3:
            current[:, i] = (current[:, i] - loc[i]) * 1.5 + loc[i]  # wider spread
        else:
            current[:, i] += (0.2, 0.5, 1.0)[kind] * scale[i]
        shifted.append(names[i])
    return pd.DataFrame(reference, columns=names), pd.DataFrame(current, columns=names), shifted


def plain_evidently(rows: int, columns: int, queue) -> None:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current, _ = make_data(rows, columns)
    started = time.perf_counter()
    report = Report([DataDriftPreset()], include_tests=True).run(current, reference)
    seconds = time.perf_counter() - started
    from monitoring.drift import _column_verdicts

    verdicts = {k: v["drifted"] for k, v in _column_verdicts(report.dict()).items()}
    queue.put({"seconds": seconds, "peak_rss_mb": _peak_mb(), "verdicts": verdicts})


def loopline_monitor(rows: int, columns: int, max_rows: int, queue) -> None:
    from monitoring.drift import detect_drift

    reference, current, _ = make_data(rows, columns)
    started = time.perf_counter()
    result = detect_drift(
        reference, current, list(reference.columns), drift_share=0.5, max_rows=max_rows
    )
    seconds = time.perf_counter() - started
    verdicts = {k: v["drifted"] for k, v in result.columns.items()}
    queue.put({"seconds": seconds, "peak_rss_mb": _peak_mb(), "verdicts": verdicts})


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def in_child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=64)
    parser.add_argument("--max-rows", type=int, default=20_000)
    args = parser.parse_args()
    _, _, shifted = make_data(10, args.columns)
    ours = in_child(loopline_monitor, args.rows, args.columns, args.max_rows)
    print(f"loopline: {ours['seconds']:.1f} s, peak {ours['peak_rss_mb']} MB")
    full = in_child(plain_evidently, args.rows, args.columns)
    print(f"plain Evidently: {full['seconds']:.1f} s, peak {full['peak_rss_mb']} MB")
    names = list(full["verdicts"])
    agree = sum(ours["verdicts"][n] == full["verdicts"][n] for n in names) / len(names)
    truth = sum(full["verdicts"][n] == (n in shifted) for n in names) / len(names)
    report = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "command": f"python -m benchmarks.drift --rows {args.rows} --columns {args.columns} "
        f"--max-rows {args.max_rows}",
        "rows": args.rows,
        "columns": args.columns,
        "shifted_columns": len(shifted),
        "plain_evidently": {k: v for k, v in full.items() if k != "verdicts"},
        "loopline": {k: v for k, v in ours.items() if k != "verdicts"},
        "speedup": round(full["seconds"] / ours["seconds"], 1),
        "memory_ratio": round(full["peak_rss_mb"] / ours["peak_rss_mb"], 1),
        "verdict_agreement": agree,
        "full_run_matches_planted_shifts": truth,
        "disagreeing_columns": [n for n in names if ours["verdicts"][n] != full["verdicts"][n]],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drift.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if agree < 0.98:
        raise SystemExit(f"verdicts agree on {agree:.1%} of columns; the goal is 98%")


if __name__ == "__main__":
    main()
