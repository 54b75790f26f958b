"""Monitoring: drift checks over the prediction log, and the ground truth that arrives."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from loopline.cli import options
from loopline.cli.options import Every, JsonOutput, ModelName, console


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
        from loopline.cli.views.monitor import render_monitor
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
        while True:
            result = monitor_.run(retrain=retrain)
            if json_output:
                typer.echo(json.dumps(dataclasses.asdict(result), default=str))
            else:
                render_monitor(result, console)
            if pause is None:
                failed = any(r.get("state") == "failed" for r in result.retraining)
                raise typer.Exit(1 if failed else 0)
            try:
                time.sleep(pause)
            except KeyboardInterrupt:
                raise typer.Exit(0) from None


def feedback(
    ctx: typer.Context,
    labels: Annotated[
        Path, typer.Argument(help="CSV with request_id, label and optionally item columns.")
    ],
    model: ModelName = None,
) -> None:
    """Attach ground-truth labels to served predictions (by request id).

    The file is checked as POST /feedback checks a body; one bad row refuses the whole
    file (exit 2) and nothing is stored.
    """
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
    database = open_database(settings, migrate=True)
    try:
        result = FeedbackStore(database).attach(parsed)
    finally:
        database.close()
    console.print(
        f"stored {result['stored']} label(s); {result['unknown_count']} had no logged prediction"
    )
    typer.echo(json.dumps(result))


def _classes(settings) -> list[str] | None:
    """The champion's classes, which a label must be one of (None: no champion yet)."""
    from loopline.storage.registry import reader

    champion = reader(settings).champion(settings.model_name)
    if champion is None:
        return None
    return json.loads(champion.tags.get("loopline.schema", "{}")).get("classes")
