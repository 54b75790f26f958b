"""How `loopline monitor` shows one pass: the verdict, the scores, and where the reports are."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from loopline.monitoring.monitor import MonitorResult

COLOURS = {"ok": "green", "drift": "red", "waiting": "yellow", "no_champion": "yellow"}


def render_monitor(result: MonitorResult, console: Console) -> None:
    colour = COLOURS.get(result.status, "white")
    window = result.window
    span = "no window"
    if window:
        span = f"predictions {window['first_seq']}-{window['last_seq']}: {window['rows']} rows"
        if not window["rows"]:
            span = f"no predictions after {window['last_seq']} yet"
        if window.get("sampled") and window["sampled"] < window["rows"]:
            span += f" ({window['sampled']} drawn by number)"
    if result.seconds is not None and result.drift:
        span += f", judged in {result.seconds:.1f} s"
    console.print(
        f"[{colour}]{result.status}[/] {result.model} v{result.champion_version or '-'}: {span}"
    )
    if result.status == "no_champion":
        console.print("  no champion yet; run `loopline run training` first")
    if result.status == "waiting":
        console.print("  the window is below min_rows; it keeps growing until the next pass")
    if result.drift:
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_column()
        table.add_column()
        table.add_row("drifted features", f"{result.drift['drifted_share']:.0%}")
        prediction = result.drift.get("prediction")
        if prediction:
            table.add_row(
                "prediction drift",
                f"{prediction['method']} {prediction['score']:.3g}"
                f" ({'drifted' if prediction['drifted'] else 'stable'})",
            )
        quality = result.quality
        if quality and "mae" in quality:  # a regressor
            table.add_row(
                "error (labelled)",
                f"MAE {quality['mae']:.4g}, RMSE {quality['rmse']:.4g} on {quality['rows']} rows",
            )
        elif quality:
            table.add_row(
                "accuracy (labelled)", f"{quality['accuracy']:.3f} on {quality['rows']} rows"
            )
        console.print(table)
        for name, path in result.reports.items():  # whole, on their own line, to copy
            console.print(f"  report ({name}): {path}", soft_wrap=True)
    for reason in result.reasons:
        console.print(f"  [red]![/] {reason}")
    if result.trigger:
        console.print(f"  retraining trigger: {result.trigger}")
    for run in result.retraining:
        console.print(
            f"  retraining (trigger {run['trigger_id']}): {run['state']}"
            + (f", waiting for {run['waiting_for']}" if run.get("waiting_for") else "")
            + (f", v{run['version']}" if run.get("version") else "")
            + (f" - {run['error']}" if run.get("error") else "")
        )
