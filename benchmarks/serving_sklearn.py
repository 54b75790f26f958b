"""Serving a user's scikit-learn model: loopline's server against plain BentoML over the
same MLflow Model, in one run (issue 25's goal: at least 1x plain's throughput at 8 and
32 concurrent clients).

Run: ``.venv/bin/python -m benchmarks.serving_sklearn [--seconds 5] [--levels 1 8 32] [--repeat 3]``.
Writes ``benchmarks/results/serving_sklearn.json``.

The model is the ``churn_sklearn`` example's (a ``HistGradientBoostingClassifier`` behind
an ``OrdinalEncoder``, skops format), registered as champion through
``loopline-register-model``'s step in a scratch home. Servers, load and segments are
``benchmarks/serving``'s: ``loopline`` (typed-column validation, the model's
``predict_proba``, the durable log on SQLite, the envelope with named probabilities)
against ``plain`` and ``batchable`` (``benchmarks/plain_mlflow_bento.py``:
``mlflow.pyfunc.load_model`` in a ``@bentoml.service``). Each request is one customer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.serving import RESULTS, measure, print_table, started
from loopline.core.settings import load_settings
from loopline.ml.mlflow_model import MODEL
from loopline.ml.registration import register_model_step

EXAMPLE = Path(__file__).parents[1] / "examples" / "churn_sklearn"
PLAIN = {
    "plain": "benchmarks.plain_mlflow_bento:Plain",
    "batchable": "benchmarks.plain_mlflow_bento:Batchable",
}
MODES = ("loopline", "plain", "batchable")


def champion_home(root: Path):
    """The churn example's model, trained as its component does, registered as champion."""
    sys.path.insert(0, str(EXAMPLE))
    import churn_components
    import data

    settings = load_settings({"LOOPLINE_HOME": str(root / "home"), "LOOPLINE_MODEL_NAME": "churn"})
    frame = data.normal(3000, 0)
    train, test = frame.iloc[:2100], frame.iloc[2100:]
    train.to_parquet(root / "train.parquet")
    test.to_parquet(root / "test.parquet")

    class _Out:
        path = str(root / "model")

    class _In:
        path = str(root / "train.parquet")

    churn_components.train_hgb.python_func(train_rows=_In, model=_Out, max_iter=100, seed=0)
    result = register_model_step(
        root / "model",
        root / "test.parquet",
        root / "train.parquet",
        root / "decision",
        task="classification",
        label_column=data.LABEL,
        model_name="churn",
        run_id="bench",
        settings=settings,
    )
    rows = test.drop(columns=[data.LABEL]).to_dict("records")
    return settings, Path(result["registered_folder"]) / MODEL, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=3937)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        settings, model, rows = champion_home(Path(tmp))
        servers = {
            mode: stack.enter_context(
                started(mode, settings, model, args.port + i, plain=PLAIN, rows=rows)
            )
            for i, mode in enumerate(MODES)
        }
        segment = 0
        for run in range(args.repeat):
            for level in args.levels:
                order = MODES if segment % 2 == 0 else MODES[::-1]
                segment += 1
                results += [
                    measure(mode, servers[mode], settings, level, args.seconds, run, rows)
                    for mode in order
                ]
    ratios = {}
    for level in args.levels:
        mine = {
            r["run"]: r for r in results if r["mode"] == "loopline" and r["concurrency"] == level
        }
        for base in PLAIN:
            theirs = {
                r["run"]: r for r in results if r["mode"] == base and r["concurrency"] == level
            }
            ratios.setdefault(str(level), {})[f"loopline throughput / {base}"] = [
                round(mine[k]["requests_per_s"] / theirs[k]["requests_per_s"], 2) for k in mine
            ]
    report = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "command": "python -m benchmarks.serving_sklearn "
        f"--seconds {args.seconds} --levels {' '.join(map(str, args.levels))} "
        f"--repeat {args.repeat}",
        "results": results,
        "ratios": ratios,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving_sklearn.json").write_text(json.dumps(report, indent=2))
    print_table(results, ratios)
    if any(r["errors"] or not r.get("log_matches", True) for r in results):
        raise SystemExit("errors, or the log does not match the requests served")
    missed = [
        f"{name} at {level}: {statistics.median(values):.2f}x"
        for level, entry in ratios.items()
        if int(level) >= 8
        for name, values in entry.items()
        if statistics.median(values) < 1.0
    ]
    if missed:
        raise SystemExit("goals missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
