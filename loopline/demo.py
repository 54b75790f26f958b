"""`make demo`: train a digits classifier through the whole pipeline and crown it."""

from __future__ import annotations

from rich.console import Console

from components.settings import Settings
from loopline import summary
from loopline.status import champion_status
from pipelines.engines import run_pipeline

DEMO_ARGUMENTS = {
    "dataset": "digits",
    "model_name": "digits-classifier",
    "epochs": 20,
    "workers": 2,
}


def run_demo(settings: Settings, console: Console) -> int:
    console.rule(
        "loopline demo: digits -> validate -> Ray training (2 workers) -> evaluate -> gate"
    )
    result = run_pipeline("training", DEMO_ARGUMENTS, settings)
    summary.render(summary.collect(result, settings), console)
    if not result.succeeded:
        console.print(f"[red]demo failed[/]: {result.error}")
        return 1
    champion = champion_status(settings, DEMO_ARGUMENTS["model_name"])["champion"]
    console.rule(
        f"champion: digits-classifier v{champion['version']}, "
        f"test accuracy {champion['metrics']['accuracy']:.4f}"
    )
    return 0
