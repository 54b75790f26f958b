"""The `loopline` command line: one module per noun, assembled here.

- pipeline: run, compile, schedule, submit, server
- model: status, rollback, package, db upgrade
- serve: serve
- monitor: monitor, feedback
- component: component new, check, publish, list, show, deprecate, page

Every command goes through :func:`loopline.cli.errors.handled`, the one place that maps
errors to exit codes. Commands import their engines when they run, not here.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Annotated

import typer

from loopline.cli import component, infra, model, monitor, options, pipeline, serve
from loopline.cli.errors import handled

app = typer.Typer(
    name="loopline",
    help="Kubeflow-style MLOps on one machine or a cluster: KFP pipelines, Ray training, "
    "an MLflow registry with a champion gate, BentoML serving, Evidently monitoring.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show the engines' logs (Prefect, Ray, MLflow) and tracebacks."
        ),
    ] = False,
) -> None:
    ctx.obj = {"verbose": verbose}


def demo(
    ctx: typer.Context,
    example: Annotated[
        str | None,
        typer.Option(
            "--example",
            help="Run one of examples/ instead (churn_sklearn, diabetes_torch, "
            "tickets_text): a model you bring, through the same loop.",
        ),
    ] = None,
) -> None:
    """The whole loop on embedded data: train, serve, drift, retrain, promote."""
    if example is not None:
        from loopline.cli.example_demo import run_example

        raise typer.Exit(run_example(example, options.settings(ctx), options.console))
    from loopline.cli.demo import run_demo

    raise typer.Exit(run_demo(options.settings(ctx), options.console))


COMMANDS = {
    "run": pipeline.run,
    "compile": pipeline.compile_,
    "schedule": pipeline.schedule,
    "submit": pipeline.submit,
    "server": pipeline.server,
    "status": model.status,
    "rollback": model.rollback,
    "package": model.package,
    "serve": serve.serve,
    "monitor": monitor.monitor,
    "feedback": monitor.feedback,
    "demo": demo,
    "images": infra.images,
    "deploy": infra.deploy,
}
for name, command in COMMANDS.items():
    app.command(name)(handled(command))

db = typer.Typer(help="The platform database (LOOPLINE_DATABASE_URL).", no_args_is_help=True)
db.command("upgrade")(handled(model.db_upgrade))
app.add_typer(db, name="db")

components = typer.Typer(
    help="The component catalog: create, check, publish and browse versioned components.",
    no_args_is_help=True,
)
for name, command in component.COMMANDS.items():
    components.command(name)(handled(command))
app.add_typer(components, name="component")


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code) -> None:
    """Exit without the interpreter's teardown of every loaded module: after Prefect, kfp
    and pandas are loaded that alone takes half a second. The exit handlers still run
    (log flushes, worker pools), after the threads that are not daemons have finished."""
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    os._exit(code or 0)
