"""The closing summary of a pipeline run: outputs, metrics, decision, where everything went."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loopline.core.layout import ERROR, EVALUATION
from loopline.core.settings import Settings
from loopline.pipelines.local.artifacts import read_json
from loopline.pipelines.local.results import TASK_LOG, RunResult

# (label, task, output, file inside the artifact folder)
REPORTS = [
    ("validation report", "validate-data", "report", "validation.html"),
    ("data summary (Evidently)", "validate-data", "report", "data_summary.html"),
    ("evaluation report", "evaluate", "evaluation", "report.html"),
    ("training curves", "evaluate", "evaluation", "training_curves.png"),
    ("confusion matrix", "evaluate", "evaluation", "confusion_matrix.png"),
    ("model files", "train", "model", ""),
]


def collect(result: RunResult, settings: Settings) -> dict:
    """One JSON-able dict with the run's status, outputs, training results and file paths."""
    summary: dict = {
        "status": "succeeded" if result.succeeded else "failed",
        "pipeline": result.pipeline,
        "run": result.run_name,
        "outputs": result.outputs,
        "tasks": [
            {"name": r.name, "status": r.status, "cached": r.cached, "seconds": round(r.seconds, 3)}
            for r in result.records
        ],
        "errors": _errors(result.run_dir),
    }
    if result.error:
        summary["error"] = result.error
    paths = {"run folder": result.run_dir} if result.run_dir else {}
    for task in summary["errors"]:  # what a failed step left behind: its log and reports
        folder = result.run_dir / task
        for found in sorted([*folder.rglob("*.html"), *folder.rglob(TASK_LOG)]):
            paths[f"{task}: {found.name}"] = found
    for label, task, output, name in REPORTS:
        folder = result.artifact(task, output)
        if folder is not None and (folder / name).exists():
            paths[label] = folder / name
    summary["paths"] = {k: str(v) for k, v in paths.items()}
    evaluation = result.artifact("evaluate", "evaluation")
    if evaluation is not None and (evaluation / EVALUATION).exists():
        verdict = read_json(evaluation / EVALUATION).get("baselines", {}).get("verdict")
        if verdict:  # does the model beat a majority guess and a linear model?
            summary["baseline"] = verdict
    model = result.artifact("train", "model")
    decision = result.artifact("register", "decision") or result.artifact(
        "register-model",
        "decision",  # any pipeline's register step
    )
    if decision is not None:
        summary["decision"] = read_json(decision / "decision.json")
        training = read_json(model / "training.json") if model else None
        summary["training"] = {k: v for k, v in (training or {}).items() if k != "history"}
        summary["mlflow"] = {
            "tracking_uri": settings.tracking_uri,
            "ui": f"mlflow ui --backend-store-uri {settings.tracking_uri}",
        }
    if result.run_dir and result.run_dir.exists():
        (result.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        summary["paths"]["summary"] = str(result.run_dir / "summary.json")
    return summary


def _errors(run_dir: Path | None) -> dict[str, str]:
    if run_dir is None or not run_dir.exists():
        return {}
    # keyed by the task's folder under the run, e.g. "validate-data" or "for-loop-2-0/add"
    return {
        str(p.parent.relative_to(run_dir)): p.read_text().strip()
        for p in sorted(run_dir.rglob(ERROR))
    }


def render(summary: dict, console: Console) -> None:
    tasks = summary.get("tasks") or []
    if tasks:
        ran = [t for t in tasks if t["status"] != "skipped"]
        cached = sum(t["cached"] for t in ran)
        skipped = len(tasks) - len(ran)
        console.print(
            f"{len(ran)} tasks ran ({cached} served from cache)"
            + (f", {skipped} skipped" if skipped else "")
        )
    decision = summary.get("decision")
    if decision:
        table = Table(title="Test-set metrics", show_header=False)
        for name, value in decision["metrics"].items():
            table.add_row(name, f"{value:.4f}")
        console.print(table)
        baseline_line(summary, console)
        gate = decision["decision"]
        verdict = "[green]promoted to champion[/]" if gate["promote"] else "[yellow]not promoted[/]"
        console.print(
            f"Model [bold]{decision['model_name']}[/] version {decision['version']}: {verdict}"
        )
        for reason in gate["reasons"]:
            console.print(f"  - {reason}")
    training = summary.get("training") or {}
    if training:
        console.print(
            f"Training: {training['arch']}, {training['epochs_run']} epochs, best epoch "
            f"{training['best_epoch'] + 1}"
            + (", stopped early" if training["stopped_early"] else "")
        )
    for name, value in (summary.get("outputs") or {}).items():
        shown = value["path"] if isinstance(value, dict) and "path" in value else value
        console.print(
            f"Pipeline output {name}: {escape(json.dumps(shown, default=str))}", soft_wrap=True
        )
    for task, error in summary.get("errors", {}).items():
        console.print(f"[red]step {task} failed[/]: {escape(error)}", soft_wrap=True)
    console.print("[bold]Where everything went[/]")
    for name, path in summary["paths"].items():
        console.print(f"  {name}: {path}", soft_wrap=True)
    if "mlflow" in summary:
        console.print(f"  MLflow UI: {summary['mlflow']['ui']}", soft_wrap=True)


def baseline_line(summary: dict, console: Console) -> None:
    """Whether the model beats the simple baselines on the same test rows: a warning
    when it does not (the gate compares with the champion, never with these)."""
    verdict = summary.get("baseline")
    if not verdict:
        return
    if verdict["beaten"]:
        console.print(f"Baselines: {escape(verdict['summary'])}", soft_wrap=True)
        return
    console.print(
        f"[yellow]warning[/]: {escape(verdict['summary'])}; a simpler model does as well "
        "(see the evaluation report's baselines)",
        soft_wrap=True,
    )
