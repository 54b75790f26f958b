"""Monitoring at scale: ``loopline monitor`` as a whole process vs plain Evidently.

Run: ``.venv/bin/python -m benchmarks.drift [--rows 100000 300000 1000000] [--repeat 2]
[--database sqlite|postgres]``. Writes ``benchmarks/results/drift-<database>.json``.

Set-up, once: a home with a champion (the digits CNN, 2 epochs, in-process) and its
reference sample (the digits training split: 1,257 rows). Then, per window size:

1. **The prediction log is filled through serving's own writer** (``PredictionLog``, as
   the service does; requests of 1,000 rows): training images drawn again, with every
   third pixel column shifted by 0.03 to 0.25 (pixels are 0 to 1) in the second half of
   the window. The same rows go to a Parquet file for plain Evidently.
2. **loopline:** ``loopline monitor --no-retrain --json``, the command an operator runs,
   in its own process: imports, the database, the champion's reference, the sample of the
   window, Evidently, the HTML report and the workspace. Timed with its peak RSS by
   ``/usr/bin/time``, which is small, so the peak is the monitor's own. And a pass of a
   long-running ``loopline monitor --every``, which pays its imports once: the seconds
   each pass reports, over the same window.
3. **plain Evidently:** a process that imports Evidently, reads the same window and
   reference from Parquet and runs ``Report([DataDriftPreset()])`` over every row.

Each way runs ``--repeat`` times, alternately, and the spread is shown. Agreement is the
share of columns whose verdict matches the plain full-data run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MODEL = "drift-bench"
REQUEST_ROWS = 1000

PLAIN = """
import json, sys, warnings
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
from loopline.monitoring.drift import _column_verdicts

current, reference, out = sys.argv[1:4]
current, reference = pd.read_parquet(current), pd.read_parquet(reference)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    report = Report([DataDriftPreset()], include_tests=True).run(current, reference)
verdicts = {k: v["drifted"] for k, v in _column_verdicts(report.dict()).items()}
open(out, "w").write(json.dumps(verdicts))
"""


def timed(command: list[str], env: dict) -> dict:
    """Wall seconds and peak RSS (MB) of ``command``, measured by /usr/bin/time."""
    with tempfile.NamedTemporaryFile(suffix=".time") as stats:
        started = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", stats.name, *command],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{command[:4]} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        peak_kb = int(Path(stats.name).read_text().split()[-1])
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak_kb / 1024), "out": done.stdout}


def long_running_passes(env: dict, passes: int = 3) -> list[float]:
    """``loopline monitor --every 2s``: the seconds each pass reports judging the same
    window (the checks are forgotten after each), imports paid once."""
    command = [
        str(Path(sys.executable).parent / "loopline"),
        "monitor",
        "--every",
        "2s",
        "--no-retrain",
        "--json",
    ]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seconds = []
    try:
        for line in process.stdout:
            if line.startswith("{"):
                seconds.append(json.loads(line)["seconds"])
                forget_checks(env)
                if len(seconds) == passes:
                    break
    finally:
        process.terminate()  # SIGTERM: the monitor stops between passes
        process.wait(timeout=60)
    return seconds


def champion(env: dict, folder: Path) -> tuple[str, pd.DataFrame, list[str], list[str]]:
    """Train, register and promote a champion; its version, train split, features, classes."""
    from loopline.core.settings import load_settings
    from loopline.ml.dataset import read_schema, read_split
    from loopline.ml.steps import evaluate_step, ingest_step, register_step, train_step
    from loopline.ml.train_config import TrainConfig

    settings = load_settings(env)
    data = folder / "digits"
    ingest_step("digits", data, run_id="bench", label_column="label", image_size=8, seed=0)
    model = folder / "model"
    config = TrainConfig(epochs=2, augment=False)
    train_step(data, model, config, run_id="bench", workers=0, model_name=MODEL, settings=settings)
    evaluate_step(model, data, folder / "eval", run_id="bench", settings=settings)
    decision = register_step(
        model,
        data,
        folder / "eval",
        folder / "decision",
        run_id="bench",
        model_name=MODEL,
        settings=settings,
    )
    schema = read_schema(data)
    train = read_split(data, "train", schema)
    frame = pd.DataFrame(train.x, columns=schema.features)
    frame["label"] = [schema.classes[int(i)] for i in train.y]
    return decision["version"], frame, schema.features, schema.classes


def window(train: pd.DataFrame, features: list[str], rows: int, seed: int) -> pd.DataFrame:
    """``rows`` training images drawn again (so, unshifted, no drift), and in the second half
    of the window every third pixel column shifted by 0.03 to 0.25 (pixels are 0 to 1): some
    columns drift clearly, some barely, some not at all: where a sample could disagree."""
    rng = np.random.default_rng(seed)
    picked = train.iloc[rng.integers(0, len(train), rows)]
    x = picked[features].to_numpy(np.float32)
    for i in range(0, len(features), 3):
        x[rows // 2 :, i] += (0.03, 0.06, 0.125, 0.25)[(i // 3) % 4]
    frame = pd.DataFrame(np.clip(x, 0, 1), columns=features)
    frame["prediction"] = picked["label"].to_numpy()
    return frame


def fill_log(env: dict, version: str, frame: pd.DataFrame, features: list[str], classes) -> float:
    """Write ``frame`` through the prediction log's writer; seconds taken."""
    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database
    from loopline.storage.predictions import Answer, PredictionLog
    from loopline.storage.tables import checks, predictions, requests

    database = open_database(load_settings(env), migrate=True)
    with database.write() as connection:  # a fresh window each time
        for table in (predictions, requests, checks):
            connection.execute(table.delete())
    log = PredictionLog(database)
    x = frame[features].to_numpy(np.float32)
    labels = frame["prediction"].tolist()
    probabilities = np.full((REQUEST_ROWS, len(classes)), 1 / len(classes))
    started = time.perf_counter()
    pending = []
    for start in range(0, len(frame), REQUEST_ROWS):
        end = start + REQUEST_ROWS
        answer = Answer(
            uuid.uuid4().hex,
            version,
            x[start:end],
            labels[start:end],
            probabilities[: len(labels[start:end])],
        )
        pending.append(log.submit(answer))
        if len(pending) >= 32:  # as concurrent handlers do: many requests per commit
            [p.result(timeout=120) for p in pending]
            pending = []
    [p.result(timeout=120) for p in pending]
    seconds = time.perf_counter() - started
    log.close()
    database.close()
    return seconds


def forget_checks(env: dict) -> None:
    """Let the next pass judge the same window again."""
    from loopline.core.settings import load_settings
    from loopline.storage.database import open_database
    from loopline.storage.tables import checks

    database = open_database(load_settings(env))
    with database.write() as connection:
        connection.execute(checks.delete())
    database.close()


@contextlib.contextmanager
def database_url(kind: str):
    if kind == "sqlite":
        yield None
        return
    from tests.postgres import new_database, running_postgres

    with running_postgres() as url:
        yield new_database(url, "loopline_bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--plain-from",
        type=Path,
        help="reuse the plain Evidently runs of an earlier results file (the windows are "
        "the same for the same rows: one seed), e.g. for a second database",
    )
    args = parser.parse_args()
    earlier = {}
    if args.plain_from:
        earlier = {w["rows"]: w for w in json.loads(args.plain_from.read_text())["windows"]}
    results = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m benchmarks.drift --rows "
        + " ".join(map(str, args.rows))
        + f" --repeat {args.repeat} --database {args.database}"
        + (f" --plain-from {args.plain_from}" if args.plain_from else ""),
        "windows": [],
    }
    with tempfile.TemporaryDirectory() as tmp, database_url(args.database) as url:
        folder = Path(tmp)
        env = {
            **os.environ,
            "LOOPLINE_HOME": str(folder / "home"),
            "LOOPLINE_MODEL_NAME": MODEL,
            "PYTHONPATH": str(ROOT),
        }
        if url:
            env["LOOPLINE_DATABASE_URL"] = url
        version, train, features, classes = champion(env, folder)
        reference = folder / "reference.parquet"
        _reference_frame(env, version, classes).to_parquet(reference, index=False)
        for rows in args.rows:
            frame = window(train, features, rows, seed=rows)
            current = folder / "window.parquet"
            frame.to_parquet(current, index=False)
            fill_s = fill_log(env, version, frame, features, classes)
            del frame
            ours, plain = [], []
            monitor = [
                str(Path(sys.executable).parent / "loopline"),
                "monitor",
                "--no-retrain",
                "--json",
            ]
            plain_cmd = [
                sys.executable,
                "-c",
                PLAIN,
                str(current),
                str(reference),
                str(folder / "plain.json"),
            ]
            warm = long_running_passes(env)
            for _ in range(args.repeat):
                forget_checks(env)
                ours.append(timed(monitor, env))
                if rows not in earlier:
                    plain.append(timed(plain_cmd, env))
            if rows in earlier:
                verdicts = earlier[rows]["plain_verdicts"]
                plain = [
                    {"seconds": t, "peak_rss_mb": m}
                    for t, m in zip(
                        earlier[rows]["plain_s"], earlier[rows]["plain_peak_rss_mb"], strict=True
                    )
                ]
            else:
                verdicts = json.loads((folder / "plain.json").read_text())
            result = json.loads(ours[-1]["out"].strip().splitlines()[-1])
            mine = {k: v["drifted"] for k, v in result["drift"]["columns"].items()}
            if result["drift"]["prediction"]:
                mine["prediction"] = result["drift"]["prediction"]["drifted"]
            shared = [k for k in verdicts if k in mine]
            agree = sum(mine[k] == verdicts[k] for k in shared) / len(shared)
            entry = {
                "rows": rows,
                "fill_log_s": round(fill_s, 1),
                "loopline_s": [r["seconds"] for r in ours],
                "loopline_peak_rss_mb": [r["peak_rss_mb"] for r in ours],
                # in a long-running `loopline monitor --every`: the first pass, then warm ones
                "long_running_pass_s": warm,
                "plain_s": [r["seconds"] for r in plain],
                "plain_peak_rss_mb": [r["peak_rss_mb"] for r in plain],
                "sampled_rows": result["window"].get("sampled"),
                "speedup": round(
                    statistics.median(r["seconds"] for r in plain)
                    / statistics.median(r["seconds"] for r in ours),
                    1,
                ),
                "speedup_long_running": round(
                    statistics.median(r["seconds"] for r in plain) / statistics.median(warm[1:]), 1
                ),
                "verdict_agreement": round(agree, 4),
                "columns_compared": len(shared),
                "drifted_plain": sum(verdicts[k] for k in shared),
                "disagreeing": [k for k in shared if mine[k] != verdicts[k]],
                "plain_verdicts": verdicts,
                "plain_reused": rows in earlier,
            }
            results["windows"].append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "plain_verdicts"}))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"drift-{args.database}.json").write_text(json.dumps(results, indent=2))
    report(results)
    if missed := goals_missed(results["windows"]):
        raise SystemExit("goals missed: " + "; ".join(missed))


def goals_missed(windows: list[dict]) -> list[str]:
    """Issue 16's goals: ≥ 98% agreement and ≤ 1 GB peak at any window, ≥ 10x at 1M rows."""
    missed = []
    for w in windows:
        if w["verdict_agreement"] < 0.98:
            missed.append(f"{w['rows']:,} rows: verdicts agree on {w['verdict_agreement']:.1%}")
        if max(w["loopline_peak_rss_mb"]) > 1024:
            missed.append(f"{w['rows']:,} rows: peak RSS {max(w['loopline_peak_rss_mb'])} MB")
        if w["rows"] >= 1_000_000 and w["speedup"] < 10:
            missed.append(f"{w['rows']:,} rows: {w['speedup']}x plain Evidently")
    return missed


def _reference_frame(env: dict, version: str, classes: list[str]) -> pd.DataFrame:
    """The champion's reference, as the monitor reads it (features and prediction)."""
    from loopline.core.layout import REFERENCE
    from loopline.core.settings import load_settings
    from loopline.storage.registry import Registry

    registry = Registry(load_settings(env))
    folder = registry.download(registry.champion(MODEL))
    reference = pd.read_parquet(folder / REFERENCE)
    reference["prediction"] = [classes[int(i)] for i in reference.pop("label")]
    return reference


def report(results: dict) -> None:
    print(f"\n{results['machine']}\n{results['command']}\n")
    print(
        f"{'window rows':>12} {'loopline s':>12} {'--every pass s':>15} {'plain s':>12} "
        f"{'speed-up':>9} {'loopline MB':>12} {'plain MB':>10} {'agree':>6}"
    )
    for w in results["windows"]:
        print(
            f"{w['rows']:>12,} {_spread(w['loopline_s']):>12} "
            f"{_spread(w['long_running_pass_s'][1:]):>15} {_spread(w['plain_s']):>12} "
            f"{w['speedup']:>4}/{w['speedup_long_running']:<4} "
            f"{_spread(w['loopline_peak_rss_mb']):>12} "
            f"{_spread(w['plain_peak_rss_mb']):>10} {w['verdict_agreement']:>6.1%}"
        )


def _spread(values: list) -> str:
    low, high = min(values), max(values)
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


if __name__ == "__main__":
    main()
