"""The closing summary of a pipeline run: metrics, decision, and where everything went."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from components.settings import Settings
from components.steps import ERROR
from pipelines.artifacts import output, read_json


def collect(run_dir: Path, settings: Settings) -> dict:
    """Gather a run's results from its artifact folders into one JSON-able dict."""
    validation = output(run_dir, "validate-data", "report")
    evaluation = output(run_dir, "evaluate", "evaluation")
    model = output(run_dir, "train", "model")
    decision = read_json(output(run_dir, "register", "decision") / "decision.json")
    training = read_json(model / "training.json")
    paths = {
        "run folder": run_dir,
        "validation report": validation / "validation.html",
        "data summary (Evidently)": validation / "data_summary.html",
        "evaluation report": evaluation / "report.html",
        "training curves": evaluation / "training_curves.png",
        "confusion matrix": evaluation / "confusion_matrix.png",
        "model files": model,
    }
    errors = {p.parent.name: p.read_text().strip() for p in sorted(run_dir.glob(f"*/{ERROR}"))}
    summary = {
        "run_dir": str(run_dir),
        "errors": errors,
        "validation": read_json(validation / "validation.json"),
        "training": {k: v for k, v in (training or {}).items() if k != "history"},
        "decision": decision,
        "paths": {k: str(v) for k, v in paths.items() if v.exists()},
        "mlflow": {
            "tracking_uri": settings.tracking_uri,
            "ui": f"mlflow ui --backend-store-uri {settings.tracking_uri}",
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["paths"]["summary"] = str(run_dir / "summary.json")
    return summary


def render(summary: dict, console: Console) -> None:
    decision = summary.get("decision")
    if decision:
        table = Table(title="Test-set metrics", show_header=False)
        for name, value in decision["metrics"].items():
            table.add_row(name, f"{value:.4f}")
        console.print(table)
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
    for task, error in summary.get("errors", {}).items():
        console.print(f"[red]step {task} failed[/]: {escape(error)}", soft_wrap=True)
    console.print("[bold]Where everything went[/]")
    for name, path in summary["paths"].items():
        console.print(f"  {name}: {path}", soft_wrap=True)
    console.print(f"  MLflow UI: {summary['mlflow']['ui']}", soft_wrap=True)
