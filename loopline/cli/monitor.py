"""Monitoring: drift checks over the prediction log, and the ground truth that arrives."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loopline.cli import options
from loopline.cli.options import Every, JsonOutput, ModelName, console, first_line


def monitor(
    ctx: typer.Context,
    every: Every = None,
    retrain: Annotated[bool, typer.Option(help="Start retraining when the policy fires.")] = True,
    json_output: JsonOutput = False,
    model: ModelName = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics of the checks on this port (with --every)."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address for --metrics-port; 0.0.0.0 in a pod.")
    ] = "127.0.0.1",
) -> None:
    """Check the prediction log for drift with Evidently; start retraining when due.

    With --every it repeats until Ctrl-C or SIGTERM, paying its imports once.
    """
    from loopline.cli.imports import frozen

    with frozen():
        from loopline.core import engine_env, processes
        from loopline.monitoring.monitor import Monitor
        from loopline.monitoring.policy import load_policy

    settings = options.settings(ctx, model)
    policy = load_policy(settings)
    pause = options.seconds(every, "--every") if every else None
    engine_env.prepare_logs(settings)
    if metrics_port is not None and pause is None:
        raise typer.BadParameter("metrics need a monitor that keeps running: add --every")
    monitor_ = Monitor(settings, policy)  # one database and one set of imports for every pass
    with (
        processes.sigterm_as_interrupt(),
        contextlib.closing(monitor_),
        contextlib.ExitStack() as stack,
    ):
        if metrics_port is not None:
            from loopline.monitoring import metrics

            server = metrics.serve(settings, monitor_.database, metrics_port, metrics_host)
            stack.callback(server.shutdown)
            console.print(f"metrics on http://{metrics_host}:{metrics_port}/metrics")
        if pause is None:
            result = monitor_.run(retrain=retrain)
            _show(result, json_output)
            failed = any(r.get("state") == "failed" for r in result.retraining)
            raise typer.Exit(1 if failed else 0)
        outage = Outage(pause)
        while True:
            try:
                _show(monitor_.run(retrain=retrain), json_output)
                outage.over()
            except Exception as exc:  # the database, registry or disk is away: wait, resume
                outage.failed(exc)
            try:
                time.sleep(outage.wait)
            except KeyboardInterrupt:
                raise typer.Exit(0) from None


class Outage:
    """A long-running monitor outlives its stores: a pass that fails is logged, the wait
    grows (doubling, up to ``MAX_BACKOFF_S``), and passes resume when the store returns."""

    MAX_BACKOFF_S = 300.0

    def __init__(self, pause: float):
        self.pause = self.wait = pause
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        self.wait = min(max(self.pause, 1.0) * 2 ** min(self.failures, 10), self.MAX_BACKOFF_S)
        from loopline.cli.errors import record

        where = record(exc)  # the traceback to the home's error log; the terminal stays clean
        console.print(
            f"[yellow]monitoring pass failed[/] ({type(exc).__name__}: "
            f"{escape(first_line(str(exc)))}); retrying in {self.wait:.0f} s"
            + (f"; details: {where}" if where else ""),
            soft_wrap=True,
        )

    def over(self) -> None:
        if self.failures:
            console.print(f"monitoring resumed after {self.failures} failed pass(es)")
        self.failures, self.wait = 0, self.pause


def _show(result, json_output: bool) -> None:
    from loopline.cli.views.monitor import render_monitor

    if json_output:
        typer.echo(json.dumps(dataclasses.asdict(result), default=str))
    else:
        render_monitor(result, console)


def feedback(
    ctx: typer.Context,
    labels: Annotated[
        Path, typer.Argument(help="CSV with request_id, label and optionally item columns.")
    ],
    model: ModelName = None,
) -> None:
    """Attach ground-truth labels to served predictions (by request id).

    The file is checked as POST /feedback checks a body; one bad row refuses the whole
    file (exit 2) and nothing is stored. Each label is recorded as sent by
    ``cli:USER``; a different label for an item already labelled is kept as a conflict.
    """
    import dataclasses
    import getpass

    from loopline.serving.labels import check_classes, read_labels_csv
    from loopline.serving.requests import RequestError
    from loopline.storage.database import open_database
    from loopline.storage.feedback import FeedbackStore

    settings = options.settings(ctx, model)
    try:
        parsed = read_labels_csv(labels)
        check_classes(parsed, _classes(settings))
    except RequestError as exc:
        console.print(f"[red]labels refused, none stored[/]: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    source = f"cli:{getpass.getuser()}"
    database = open_database(settings, migrate=True)
    try:
        store = FeedbackStore(database, settings.labels.conflicts)
        result = store.attach([dataclasses.replace(lb, source=source) for lb in parsed])
    finally:
        database.close()
    console.print(
        f"stored {result['stored']} label(s) as {source}; {result['repeated']} repeated, "
        f"{result['conflicts']} in conflict with an earlier label (kept, not applied); "
        f"{result['unknown_count']} had no logged prediction"
    )
    typer.echo(json.dumps(result))


def _classes(settings) -> list[str] | None:
    """The champion's classes, which a label must be one of (None: no champion yet)."""
    from loopline.storage.registry import reader

    champion = reader(settings).champion(settings.model_name)
    if champion is None:
        return None
    return json.loads(champion.tags.get("loopline.schema", "{}")).get("classes")
