"""`loopline status`: the champion and its metrics, the last drift check, the last
retraining and the triggers still pending.

It only reads: it creates no database and starts no engine, and answers without
importing MLflow or Evidently.
"""

from __future__ import annotations

from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from loopline.core.layout import FORMAT_TAG
from loopline.core.settings import Settings
from loopline.storage.registry import reader


def collect(settings: Settings) -> dict:
    name = settings.model_name
    reads = reader(settings)
    champion = reads.champion(name)
    found = {"model": name, "champion": None, **monitoring_status(settings)}
    if champion is None:
        found["registered_models"] = reads.models()  # perhaps it is another name
        return found
    found["champion"] = {
        "version": champion.version,
        "metrics": champion.metrics,
        "source": champion.source,
        "mlflow_run_id": champion.run_id,
        "code_version": champion.tags.get("loopline.code_version"),
        "dataset": champion.tags.get("loopline.dataset"),
    }
    if champion.tags.get(FORMAT_TAG) == "mlflow":  # a user's model: its task, and pickle or not
        found["champion"] |= {
            "task": champion.tags.get("loopline.task"),
            "pickled": champion.tags.get("loopline.pickled"),
        }
    return found


def monitoring_status(settings: Settings) -> dict:
    from loopline.storage.checks import MonitorState
    from loopline.storage.database import open_for_reading
    from loopline.storage.tables import OPEN_TRIGGER_STATES

    database = open_for_reading(settings)
    if database is None:
        return {"last_check": None, "last_retraining": None, "open_trigger": None}
    try:
        state = MonitorState(database)
        name = settings.model_name
        triggers = state.triggers(name)
        last_check = state.last_check(name)
    finally:
        database.close()
    finished = [t for t in triggers if t.state not in OPEN_TRIGGER_STATES]
    opened = [t for t in triggers if t.state in OPEN_TRIGGER_STATES]
    return {
        "last_check": last_check,
        "last_retraining": asdict(finished[-1]) if finished else None,
        "open_trigger": asdict(opened[0]) if opened else None,
    }


def render(status: dict, console: Console) -> None:
    champion = status["champion"]
    if champion is None:
        console.print(no_champion(status["model"], status.get("registered_models", [])))
        return
    table = Table(title=f"{status['model']}: champion v{champion['version']}", show_header=False)
    for name, value in champion["metrics"].items():
        table.add_row(name, f"{value:.4f}")
    for key in ("source", "mlflow_run_id", "code_version", "dataset", "task", "pickled"):
        if champion.get(key) is not None:  # the built-ins have no task tag, yours no code
            table.add_row(key, str(champion[key]))
    check, retraining = status["last_check"], status["last_retraining"]
    if check:
        summary = check["summary"]
        table.add_row(
            "last drift check",
            f"{check['verdict']} on v{check['model_version']}, "
            f"{check['rows']} rows, drifted share {summary.get('drifted_share') or 0:.0%}",
        )
        if summary.get("reports"):
            table.add_row("drift report", summary["reports"].get("html", ""))
    if retraining:
        result = retraining["result"] or {}
        table.add_row(
            "last retraining",
            f"{retraining['state']} (trigger {retraining['id']}"
            + (f", v{result['version']}" if result.get("version") else "")
            + ")",
        )
    opened = status["open_trigger"]
    table.add_row(
        "open trigger",
        f"{opened['state']} (trigger {opened['id']}): " + "; ".join(opened["reasons"])
        if opened
        else "none",
    )
    held = (opened or {}).get("result") or {}
    if held.get("held"):
        table.add_row("[red]retraining held[/]", "; ".join(held["held"]))
    console.print(table)


def no_champion(name: str, registered: list[str]) -> str:
    """What to say of a model with no champion: train one, or name another."""
    others = [m for m in registered if m != name]
    if not others:
        return (
            f"Model [bold]{name}[/] has no champion yet; run `loopline run training` to train one."
        )
    return (
        f"Model [bold]{name}[/] has no champion. Registered models: {', '.join(others)}; "
        "choose one with --model NAME (or LOOPLINE_MODEL_NAME)."
    )
