"""Pipelines: run, compile, schedule, submit, and the Prefect server they run on."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from loopline.cli import options
from loopline.cli.options import (
    Arch,
    Engine,
    Every,
    JsonOutput,
    ModelName,
    Params,
    PipelineSource,
    console,
    first_line,
)

# Convenience flags of `run` and the pipeline parameters they set.
FLAG_PARAMS = {
    "dataset": "dataset",
    "label_column": "label_column",
    "epochs": "epochs",
    "workers": "workers",
    "arch": "arch",
    "model": "model_name",
    "seed": "seed",
}
WORKER_GRACE_WITHOUT_SERVER_S = 3.0  # `loopline server`'s worker, once its server is gone


def run(
    ctx: typer.Context,
    pipeline: PipelineSource,
    dataset: Annotated[str | None, typer.Option(help=options.DATASET_HELP)] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column of a CSV/Parquet file.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help="Ray Train workers, 0 (in-process, without Ray) or auto: in-process on one "
            "machine, 2 workers on a Ray cluster (LOOPLINE_RAY_ADDRESS). [default: auto]",
            metavar="N|auto",
        ),
    ] = None,
    arch: Annotated[Arch | None, typer.Option(help="Model architecture.")] = None,
    model: ModelName = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for the split, initialisation and shuffling.")
    ] = None,
    param: Params = None,
    engine: Annotated[
        Engine, typer.Option(help="prefect (caching, retries, run history) or kfp-local.")
    ] = Engine.prefect,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every task again.")] = False,
    json_output: JsonOutput = False,
    pipeline_name: options.PipelineName = None,
) -> None:
    """Run a pipeline on this machine and print a summary of where everything went."""
    if engine is Engine.prefect:
        from loopline.pipelines.local.component_runtime import start_forkserver

        start_forkserver()  # its workers' imports overlap this process's
    from loopline.cli.views import summary as run_summary
    from loopline.cli.views.run import RunView
    from loopline.pipelines.ir import check_supported
    from loopline.pipelines.local import kfp_sdk  # noqa: F401 - kfp, less its API client
    from loopline.pipelines.local.engines import run_pipeline
    from loopline.pipelines.local.scope import coerce_arguments

    settings = options.settings(ctx)
    ir = load_pipeline(pipeline, name=pipeline_name)
    flags = {
        "dataset": options.dataset(dataset) if dataset is not None else None,
        "label_column": label_column,
        "epochs": epochs,
        "workers": _workers(workers) if workers is not None else None,
        "arch": arch.value if arch is not None else None,
        "model": model,
        "seed": seed,
    }
    arguments = {FLAG_PARAMS[k]: v for k, v in flags.items() if v is not None}
    if dataset is not None and model is None and "model_name" in ir.parameter_names():
        arguments["model_name"] = f"{Path(dataset).stem}-classifier"
    arguments.update(options.parse_params(param or []))
    check_supported(ir)
    values = coerce_arguments(ir, arguments)
    from loopline.pipelines.builtin_pipelines import PIPELINES

    # A bad architecture, freeze rule or weights file fails now, not in train; the
    # defaults need no check (the check imports torch: 1.5-3 s of a cached re-run).
    if pipeline in PIPELINES and {"arch", "freeze", "pretrained"} & arguments.keys():
        from loopline.ml.transfer import preflight

        preflight(values, settings)
    from loopline.core import engine_env

    engine_env.prepare_logs(settings)
    console.print(f"[bold]loopline[/]: running pipeline {ir.name} with the {engine.value} engine")
    verbose = options.verbose(ctx)
    try:
        with (
            _stdout_to_stderr() if json_output else contextlib.nullcontext(),
            RunView(console) as view,
        ):
            result = run_pipeline(
                ir,
                arguments,
                settings,
                engine=engine.value,
                enable_cache=not no_cache,
                listener=view,
                capture_output=not verbose,
            )
    except Exception:
        if api := os.environ.get("PREFECT_API_URL"):
            console.print(
                f"PREFECT_API_URL points at {api}: start a Prefect server there, or unset it "
                "to use this home's own server."
            )
        raise
    collected = run_summary.collect(result, settings)
    if json_output:
        typer.echo(json.dumps(collected, indent=2, default=str))
    else:
        run_summary.render(collected, console)
    if not result.succeeded:
        console.print(f"[red]pipeline {ir.name} failed[/]: {first_line(result.error)}")
        raise typer.Exit(1)


def _workers(value: str) -> int:
    if value == "auto":
        return -1
    if not value.isdigit():
        raise typer.BadParameter(
            f"{value!r} is neither a number of workers nor auto", param_hint="--workers"
        )
    return int(value)


def load_pipeline(
    source: str, target: str = "cpu", name: str | None = None, *, write_lock: bool = False
):
    """The pipeline's IR (:func:`loopline.catalog.pipelines.load_pinned`), its warnings and
    pins shown; a source that names nothing is a usage error on its option."""
    from loopline.core.settings import load_settings
    from loopline.pipelines.ir import PipelineSourceError, load

    try:
        if Path(source).suffix != ".py" or not Path(source).exists():
            return load(source, name=name, target=target)  # nothing to pin: no catalog
        from loopline.catalog.pipelines import load_pinned

        loaded = load_pinned(source, load_settings(), target, name, write_lock=write_lock)
    except PipelineSourceError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None
    for warning in loaded.warnings:
        console.print(f"[yellow]warning[/]: {warning}", markup=True, soft_wrap=True)
    if loaded.lock:
        pinned = ", ".join(f"{k} {v}" for k, v in loaded.pinned.items())
        console.print(f"pinned {pinned} in {loaded.lock}", markup=False)
    return loaded.ir


def compile_(
    ctx: typer.Context,
    pipeline: PipelineSource,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the IR YAML.")],
    target: options.Target = options.TargetName.cpu,
    pipeline_name: options.PipelineName = None,
) -> None:
    """Compile a pipeline to KFP v2 IR YAML for Kubeflow Pipelines."""

    ir = load_pipeline(pipeline, target, pipeline_name, write_lock=True)
    console.print(f"wrote {ir.write(output)}")


def schedule(
    ctx: typer.Context,
    pipeline: PipelineSource,
    cron: Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 3 * * *".')] = None,
    every: Every = None,
    param: Params = None,
    name: Annotated[
        str | None, typer.Option(help="Schedule name [default: the pipeline's].")
    ] = None,
    kfp_host: Annotated[
        str | None,
        typer.Option(help="Create a Kubeflow recurring run at this KFP API instead of Prefect."),
    ] = None,
    work_pool: Annotated[
        str | None,
        typer.Option(
            help="A Prefect Kubernetes work pool (loopline-kubernetes in infra/k8s) whose "
            "worker runs each run as a Job; set PREFECT_API_URL to that Prefect server."
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache", help="Run every task of every scheduled run again, as run --no-cache."
        ),
    ] = False,
    target: options.Target = options.TargetName.cpu,
    pipeline_name: options.PipelineName = None,
) -> None:
    """Run a pipeline on a schedule: a Prefect deployment, or a Kubeflow recurring run.

    Scheduled runs share the home's task cache; a file or folder parameter is keyed on its
    content, so an edited dataset is ingested afresh even with the cache on."""
    from datetime import timedelta

    from loopline.pipelines.local.scope import coerce_arguments

    if (cron is None) == (every is None):
        raise typer.BadParameter(
            "give exactly one of --cron and --every", param_hint="--cron/--every"
        )
    interval = timedelta(seconds=options.seconds(every, "--every")) if every else None
    ir = load_pipeline(pipeline, target, pipeline_name)
    arguments = options.parse_params(param or [])
    coerce_arguments(ir, arguments)
    if kfp_host:
        from loopline.pipelines.cluster import kubeflow

        if cron is None:
            raise typer.BadParameter("Kubeflow recurring runs take --cron", param_hint="--cron")
        recurring = kubeflow.schedule(
            ir,
            kfp_host,
            cron=cron,
            arguments=arguments,
            name=name,
            settings=options.settings(ctx),
            enable_cache=not no_cache,
        )
        console.print(f"created Kubeflow recurring run {recurring} ({cron}) at {kfp_host}")
        return
    from loopline.pipelines.cluster.schedules import schedule_prefect
    from loopline.pipelines.local import prefect_server

    settings = options.settings(ctx)
    with prefect_server.api(settings) as api:
        deployment = schedule_prefect(
            ir,
            settings,
            cron=cron,
            interval=interval,
            arguments=arguments,
            name=name,
            work_pool=work_pool,
            enable_cache=not no_cache,
        )
    console.print(
        f"created Prefect deployment {deployment} for {ir.name} ({cron or 'every ' + every}) "
        f"at {api}; "
        + (
            f"the {work_pool} pool's worker runs each as a Job"
            if work_pool
            else "scheduled runs start while `loopline server` runs its worker"
        )
    )


def submit(
    ctx: typer.Context,
    pipeline: PipelineSource,
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API, e.g. http://localhost:8080.")],
    param: Params = None,
    experiment: Annotated[str, typer.Option(help="Kubeflow experiment.")] = "loopline",
    target: options.Target = options.TargetName.cpu,
    pipeline_name: options.PipelineName = None,
) -> None:
    """Create a run of the compiled pipeline on Kubeflow Pipelines."""
    from loopline.pipelines.cluster import kubeflow

    ir = load_pipeline(pipeline, target, pipeline_name)
    arguments = options.parse_params(param or [])
    run_id = kubeflow.submit(
        ir, host, arguments=arguments, experiment=experiment, settings=options.settings(ctx)
    )
    console.print(f"created Kubeflow run {run_id} of {ir.name} at {host}")
    typer.echo(run_id)


def server(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 [default: LOOPLINE_PREFECT_PORT, 4200].")
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop this home's server and exit.")] = False,
) -> None:
    """Run this home's Prefect server with a worker for scheduled pipelines, until Ctrl-C.

    Every loopline command in this LOOPLINE_HOME uses the same server, which starts on
    first use and stops after LOOPLINE_PREFECT_IDLE (10m) without a loopline command.
    """
    from loopline.core import processes
    from loopline.pipelines.local import prefect_server

    settings = options.settings(ctx)
    if stop:
        stopped = prefect_server.stop(settings)
        console.print(
            f"Prefect server of {settings.home}: {'stopped' if stopped else 'not running'}"
        )
        return
    if port is not None:
        import dataclasses

        settings = dataclasses.replace(
            settings, prefect=dataclasses.replace(settings.prefect, port=port)
        )
    home_server = prefect_server.ensure(settings)
    logs = settings.logs
    worker, server_gone = None, False
    with prefect_server.lease(settings), processes.sigterm_as_interrupt():
        try:
            os.environ["PREFECT_API_URL"] = home_server.api_url
            worker = prefect_server.start_worker(home_server.api_url, logs / "prefect-worker.log")
            console.print(f"Prefect UI: {home_server.ui_url}  (logs in {logs})")
            console.print(f"Runs and schedules of {settings.home} use it; Ctrl-C stops it.")
            if _until_stopped(worker, home_server.pid) == "worker":
                console.print("[red]the Prefect worker exited[/]; see its log above")
                raise typer.Exit(1)
            server_gone = True
            console.print(
                f"the Prefect server of {settings.home} stopped (loopline server --stop); "
                "its worker stops with it"
            )
        except KeyboardInterrupt:
            pass
        finally:
            if worker is not None:
                # Without its server, a worker told to stop retries sending its last events
                # until it is killed: nothing can receive them, so a moment, not the grace.
                if server_gone:
                    processes.stop_tree(worker.pid, grace=WORKER_GRACE_WITHOUT_SERVER_S)
                else:
                    processes.stop_tree(worker.pid)
    if not prefect_server.other_leases(settings):
        prefect_server.stop(settings)


def _until_stopped(worker, server_pid: int, poll_s: float = 1.0) -> str:
    """Wait until the worker exits ("worker") or the home's server stops ("server", as
    `loopline server --stop` from another terminal does): a worker without its server
    would only log failed connections."""
    import time

    from loopline.core import processes

    while worker.poll() is None:
        if not processes.alive(server_pid):
            return "server"
        time.sleep(poll_s)
    return "worker"


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout for the JSON answer: step logs (ours and subprocesses') go to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Python-level writes, in-process too
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
