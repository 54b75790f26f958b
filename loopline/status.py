"""`loopline status`: the champion of a registered model and its metrics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from components.registry import Registry
from components.settings import Settings


def champion_status(settings: Settings, model_name: str) -> dict:
    champion = Registry(settings).champion(model_name)
    if champion is None:
        return {"model": model_name, "champion": None}
    return {
        "model": model_name,
        "champion": {
            "version": champion.version,
            "metrics": champion.metrics,
            "source": champion.source,
            "mlflow_run_id": champion.run_id,
            "code_version": champion.tags.get("loopline.code_version"),
            "dataset": champion.tags.get("loopline.dataset"),
        },
    }


def render(status: dict, console: Console) -> None:
    champion = status["champion"]
    if champion is None:
        console.print(
            f"Model [bold]{status['model']}[/] has no champion yet; "
            "run `loopline run training` to train one."
        )
        return
    table = Table(title=f"{status['model']}: champion v{champion['version']}", show_header=False)
    for name, value in champion["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    for key in ("source", "mlflow_run_id", "code_version", "dataset"):
        table.add_row(key, str(champion[key]))
    console.print(table)
