"""Serving throughput and latency, in one run: the prediction log on SQLite vs on
PostgreSQL (batching on), and adaptive batching off (SQLite).

Run: ``.venv/bin/python -m benchmarks.serving [--seconds 5] [--levels 1 8 32 64]``.
Writes ``benchmarks/results/serving.json``.

A digits CNN is trained in-process and registered as champion in a scratch
LOOPLINE_HOME. For each mode a real ``bentoml serve`` starts on loopback, and an asyncio
load generator (httpx, one connection per client) keeps ``c`` requests in flight for a
fixed time at each concurrency level. Each request is one 8x8 digit: online traffic, where
batching can only come from merging concurrent requests. PostgreSQL is a real server that
the benchmark starts (Debian's package). Every run checks zero errors and that the
prediction log holds exactly the requests that were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sklearn.datasets import load_digits

from components.database import open_database
from components.settings import load_settings
from components.sources import ingest
from components.steps import evaluate_step, register_step, train_step
from components.training import TrainConfig
from serving.prediction_log import PredictionLog
from serving.server import start_server
from tests.postgres import new_database, running_postgres

RESULTS = Path(__file__).parent / "results"
ROWS = (load_digits().data / 16.0).round(4).tolist()


async def load(url: str, concurrency: int, seconds: float, tag: str) -> dict:
    latencies: list[float] = []
    errors = 0
    ids: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(worker: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=30) as http:
            n = 0
            while time.perf_counter() < deadline:
                request_id = f"{tag}-{worker}-{n}"
                n += 1
                started = time.perf_counter()
                try:
                    answer = await http.post(
                        f"{url}/predict",
                        json={"instances": [ROWS[n % len(ROWS)]]},
                        headers={"X-Request-ID": request_id},
                    )
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                if ok:
                    ids.append(request_id)
                else:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "answered_ids": ids,
    }


def champion_home(root: Path):
    settings = load_settings({"LOOPLINE_HOME": str(root / "home")})
    ingest("digits", root / "digits", seed=0)
    model = root / "model"
    train_step(root / "digits", model, TrainConfig(epochs=5), run_id="bench", workers=0,
               model_name=settings.model_name, settings=settings)  # fmt: skip
    evaluate_step(model, root / "digits", root / "eval", run_id="bench", settings=settings)
    register_step(model, root / "digits", root / "eval", root / "decision", run_id="bench",
                  model_name=settings.model_name, settings=settings)  # fmt: skip
    return settings


def bench_mode(settings, database: str, batching: bool, levels: list[int], seconds: float,
               port: int) -> list:  # fmt: skip
    mode = f"{database}-{'on' if batching else 'off'}"
    open_database(settings, migrate=True).close()
    server = start_server(
        settings,
        port=port,
        batching="on" if batching else "off",
        log_path=Path(tempfile.gettempdir()) / f"loopline-bench-serve-{mode}.log",
    )
    rows = []
    try:
        server.wait_ready()
        asyncio.run(load(server.url, 4, 1.0, f"warmup-{mode}"))
        for level in levels:
            result = asyncio.run(load(server.url, level, seconds, f"{mode}-{level}"))
            ids = set(result.pop("answered_ids"))
            log = open_database(settings)
            logged = PredictionLog(log).read_window()
            log.close()
            in_log = set(logged.request_id[logged.request_id.str.startswith(f"{mode}-{level}-")])
            result.update(database=database, batching="on" if batching else "off",
                          logged=len(in_log), log_matches=in_log == ids)  # fmt: skip
            print(json.dumps(result))
            rows.append(result)
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--port", type=int, default=3917)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_postgres() as postgres:
        sqlite = champion_home(Path(tmp))
        on_postgres = load_settings({
            "LOOPLINE_HOME": str(Path(tmp) / "home-pg"), "LOOPLINE_TRACKING_URI": sqlite.tracking_uri,
            "LOOPLINE_DATABASE_URL": new_database(postgres, "bench"),
        })  # fmt: skip
        rows = bench_mode(sqlite, "sqlite", True, args.levels, args.seconds, args.port)
        rows += bench_mode(
            on_postgres, "postgresql", True, args.levels, args.seconds, args.port + 1
        )
        rows += bench_mode(sqlite, "sqlite", False, args.levels, args.seconds, args.port + 2)
    report = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "command": "python -m benchmarks.serving "
        f"--seconds {args.seconds} --levels {' '.join(map(str, args.levels))}",
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(report, indent=2))
    print(f"{'database':>10} {'batching':>8} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'errors':>6} log")  # fmt: skip
    for r in rows:
        print(
            f"{r['database']:>10} {r['batching']:>8} {r['concurrency']:>5} {r['requests_per_s']:>8}"
            f" {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>6}"
            f" {'ok' if r['log_matches'] else 'MISMATCH'}"
        )
    if any(r["errors"] or not r["log_matches"] for r in rows):
        raise SystemExit("errors, or the log does not match the requests served")


if __name__ == "__main__":
    main()
