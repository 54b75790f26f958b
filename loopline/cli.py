"""The `loopline` command line: run, compile, status and demo.

Exit codes (scripts rely on them): 0 success, 1 the pipeline failed (a failed data
validation included), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from components.settings import SettingsError, load_settings
from components.sources import BUILTIN

app = typer.Typer(
    name="loopline",
    help="Kubeflow-style MLOps on one machine or a cluster: KFP pipelines, Ray training, "
    "an MLflow registry with a champion gate.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


# Convenience flags of `run` and the pipeline parameters they set.
FLAG_PARAMS = {
    "dataset": "dataset",
    "label_column": "label_column",
    "epochs": "epochs",
    "workers": "workers",
    "model": "arch",
    "model_name": "model_name",
    "seed": "seed",
}


@app.command()
def run(
    pipeline: Annotated[
        str,
        typer.Argument(
            help="A built-in pipeline ('training'), a .py file holding one @dsl.pipeline, "
            "or a compiled KFP IR .yaml."
        ),
    ],
    dataset: Annotated[
        str | None,
        typer.Option(
            help=f"Built-in dataset ({', '.join(BUILTIN)}) or a path: CSV/Parquet "
            "file, image folder (one sub-folder per class) or MNIST IDX folder."
        ),
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column of a CSV/Parquet file.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Ray Train workers; 0 trains in-process without Ray.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Architecture: auto, mlp, cnn or tabular_mlp.")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Registered model name [default: <dataset>-classifier].")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for the split, initialisation and shuffling.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="Any pipeline parameter as NAME=VALUE (repeatable), e.g. lr=0.01, "
            "weight_decay=0, augment=false, patience=3, batch_size=32. VALUE is read as JSON "
            "when it parses, else as a string.",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="prefect (caching, retries, run history) or kfp-local.")
    ] = "prefect",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every task again.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help='Print {"status", "outputs", ...} as JSON on stdout.')
    ] = False,
) -> None:
    """Run a pipeline on this machine and print a summary of where everything went."""
    from loopline import summary as run_summary
    from pipelines.engines import ENGINES, run_pipeline
    from pipelines.executor import InputError, coerce_arguments
    from pipelines.ir import UnsupportedPipeline, check_supported

    settings = _settings()
    if engine not in ENGINES:
        raise typer.BadParameter(f"choose one of {', '.join(ENGINES)}", param_hint="--engine")
    ir = _load_pipeline(pipeline)
    flags = {
        "dataset": _dataset(dataset) if dataset is not None else None,
        "label_column": label_column,
        "epochs": epochs,
        "workers": workers,
        "model": _architecture(model) if model is not None else None,
        "model_name": model_name,
        "seed": seed,
    }
    arguments = {FLAG_PARAMS[k]: v for k, v in flags.items() if v is not None}
    if dataset is not None and model_name is None and "model_name" in ir.parameter_names():
        arguments["model_name"] = f"{Path(dataset).stem}-classifier"
    arguments.update(_parse_params(param or []))
    try:
        check_supported(ir)
        coerce_arguments(ir, arguments)
    except (InputError, UnsupportedPipeline) as exc:
        raise typer.BadParameter(str(exc), param_hint="PIPELINE/--param") from None
    console.print(f"[bold]loopline[/]: running pipeline {ir.name} with the {engine} engine")
    try:
        with _stdout_to_stderr() if json_output else contextlib.nullcontext():
            result = run_pipeline(ir, arguments, settings, engine=engine, enable_cache=not no_cache)
    except Exception as exc:  # the engine could not start, e.g. an unreachable Prefect API
        console.print(f"[red]could not run pipeline {ir.name}[/]: {_first_line(str(exc))}")
        if api := os.environ.get("PREFECT_API_URL"):
            console.print(
                f"PREFECT_API_URL points at {api}: start `loopline server` there, or unset it "
                "to let Prefect start a temporary server."
            )
        raise typer.Exit(1) from None
    collected = run_summary.collect(result, settings)
    if json_output:
        typer.echo(json.dumps(collected, indent=2, default=str))
    else:
        run_summary.render(collected, console)
    if not result.succeeded:
        console.print(f"[red]pipeline {ir.name} failed[/]: {_first_line(result.error)}")
        raise typer.Exit(1)


def _load_pipeline(source: str):
    from pipelines import catalog
    from pipelines.ir import UnsupportedPipeline, load

    path = Path(source)
    if source not in catalog.PIPELINES and not (
        path.suffix in {".py", ".yaml", ".yml"} and path.exists()
    ):
        raise typer.BadParameter(
            f"{source!r} is not a built-in pipeline ({', '.join(catalog.PIPELINES)}), "
            "nor an existing .py or .yaml file",
            param_hint="PIPELINE",
        )
    try:
        return load(source)
    except UnsupportedPipeline as exc:
        raise typer.BadParameter(str(exc), param_hint="PIPELINE") from None


def _dataset(value: str) -> str:
    if value in BUILTIN:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise typer.BadParameter(
            f"{value!r} is neither a built-in dataset ({', '.join(BUILTIN)}) nor an existing path",
            param_hint="--dataset",
        )
    return str(path.resolve())


def _architecture(value: str) -> str:
    if value not in ("auto", "mlp", "cnn", "tabular_mlp"):
        raise typer.BadParameter("choose auto, mlp, cnn or tabular_mlp", param_hint="--model")
    return value


@app.command("compile")
def compile_(
    pipeline: Annotated[
        str, typer.Argument(help="A built-in pipeline ('training') or a .py pipeline file.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the IR YAML.")],
) -> None:
    """Compile a pipeline to KFP v2 IR YAML for Kubeflow Pipelines."""
    from pipelines.compile import write_ir

    console.print(f"wrote {write_ir(_load_pipeline(pipeline), output)}")


@app.command()
def status(
    model_name: Annotated[
        str | None, typer.Option("--model", help="Registered model name.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show the champion model and its metrics."""
    from loopline.status import champion_status, render

    settings = _settings()
    result = champion_status(settings, model_name or settings.model_name)
    if json_output:
        typer.echo(json.dumps(result, indent=2))
    else:
        render(result, console)


@app.command()
def schedule(
    pipeline: Annotated[str, typer.Argument(help="Built-in name, .py pipeline file or IR .yaml.")],
    cron: Annotated[str | None, typer.Option(help='Cron schedule, e.g. "0 3 * * *".')] = None,
    every: Annotated[
        str | None, typer.Option(help="Interval instead of cron: 30s, 5m, 2h or 1d.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Pipeline parameter NAME=VALUE.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Schedule name [default: the pipeline's].")
    ] = None,
    kfp_host: Annotated[
        str | None,
        typer.Option(help="Create a Kubeflow recurring run at this KFP API instead of Prefect."),
    ] = None,
) -> None:
    """Run a pipeline on a schedule: a Prefect deployment, or a Kubeflow recurring run."""
    from pipelines.executor import InputError, coerce_arguments

    if (cron is None) == (every is None):
        raise typer.BadParameter(
            "give exactly one of --cron and --every", param_hint="--cron/--every"
        )
    ir = _load_pipeline(pipeline)
    arguments = _parse_params(param or [])
    try:
        coerce_arguments(ir, arguments)
    except InputError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    if kfp_host:
        from pipelines import kubeflow

        if cron is None:
            raise typer.BadParameter("Kubeflow recurring runs take --cron", param_hint="--cron")
        recurring = kubeflow.schedule(ir, kfp_host, cron=cron, arguments=arguments, name=name)
        console.print(f"created Kubeflow recurring run {recurring} ({cron}) at {kfp_host}")
        return
    from pipelines.schedules import schedule_prefect

    if not os.environ.get("PREFECT_API_URL"):
        console.print(
            "[red]no Prefect server configured[/]: start one with `loopline server`, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
        raise typer.Exit(2)
    deployment = schedule_prefect(
        ir, _settings(), cron=cron, interval=_interval(every) if every else None,
        arguments=arguments, name=name,
    )  # fmt: skip
    console.print(
        f"created Prefect deployment {deployment} for {ir.name} ({cron or 'every ' + every})"
    )


@app.command()
def submit(
    pipeline: Annotated[str, typer.Argument(help="Built-in name, .py pipeline file or IR .yaml.")],
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API, e.g. http://localhost:8080.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Pipeline parameter NAME=VALUE.")
    ] = None,
    experiment: Annotated[str, typer.Option(help="Kubeflow experiment.")] = "loopline",
) -> None:
    """Create a run of the compiled pipeline on Kubeflow Pipelines."""
    from pipelines import kubeflow

    ir = _load_pipeline(pipeline)
    run_id = kubeflow.submit(ir, host, arguments=_parse_params(param or []), experiment=experiment)
    console.print(f"created Kubeflow run {run_id} of {ir.name} at {host}")
    typer.echo(run_id)


@app.command()
def server(
    port: Annotated[int, typer.Option(help="Port of the Prefect server on 127.0.0.1.")] = 4200,
) -> None:
    """Start a Prefect server on loopback and a worker that runs scheduled pipelines."""
    from pipelines import prefect_server

    settings = _settings()
    folder = settings.home / "prefect"
    api = f"http://127.0.0.1:{port}/api"
    processes = [prefect_server.start_server(port, folder, folder / "server.log")]
    try:
        prefect_server.wait_healthy(api)
        os.environ["PREFECT_API_URL"] = api
        processes.append(prefect_server.start_worker(api, folder / "worker.log"))
        console.print(f"Prefect UI: http://127.0.0.1:{port}  (logs in {folder})")
        console.print(f"In another shell: export PREFECT_API_URL={api}")
        console.print(
            "Then `loopline schedule …` and `loopline run …` use this server. Ctrl-C stops it."
        )
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        console.print("[red]a Prefect process exited; see the logs above[/]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            process.terminate()


@app.command()
def package(
    version: Annotated[
        str | None, typer.Option(help="Registry version to package [default: the champion].")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option("--model", help="Registered model name.")
    ] = None,
) -> None:
    """Build a Bento for the champion: service, Python packages, model reference."""
    from serving.bento import PackageError, build_bento

    settings = _settings()
    if model_name:
        settings = dataclasses.replace(settings, model_name=model_name)
    try:
        built = build_bento(settings, version=version)
    except PackageError as exc:
        console.print(f"[red]cannot package[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(f"built Bento {built.tag} for {built.model_name} version {built.model_version}")
    console.print(f"  files: {built.path}")
    console.print(
        f"  container image: BENTOML_HOME={settings.bentoml_home} bentoml containerize {built.tag}"
    )
    typer.echo(built.tag)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Port on the host.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    version: Annotated[
        str | None, typer.Option(help="Serve this registry version [default: follow the champion].")
    ] = None,
    bento: Annotated[
        str | None, typer.Option(help="Serve a built Bento tag instead of the project's service.")
    ] = None,
    batching: Annotated[bool, typer.Option(help="Adaptive batching across requests.")] = True,
) -> None:
    """Serve the champion over HTTP with `bentoml serve` (KServe v1 `/predict`)."""
    from serving.server import SERVICE, start_server

    settings = _settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    servable = version or _has_champion(settings)  # before the server polls the registry
    server_ = start_server(
        settings, port=port, host=host, target=bento or SERVICE,
        version=version, batching="on" if batching else "off",
    )  # fmt: skip
    try:
        if servable:
            server_.wait_ready(timeout=300)
        else:
            console.print(
                f"[yellow]model {settings.model_name!r} has no champion yet[/]: the server "
                "answers 503 until `loopline run training` promotes one."
            )
        console.print(
            f"[green]serving[/] {settings.model_name} ({version or 'champion'}) at {server_.url}"
        )
        console.print(
            f"  POST {server_.url}/predict   Swagger UI: {server_.url}/   metrics: {server_.url}/metrics"
        )
        console.print(f"  prediction log: {settings.prediction_log}.  Ctrl-C stops the server.")
        server_.process.wait()
    except (RuntimeError, TimeoutError) as exc:
        console.print(f"[red]the server did not start[/]: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        server_.stop()


@app.command()
def monitor(
    every: Annotated[
        str | None, typer.Option(help="Repeat at this interval (30s, 5m, 2h, 1d) until Ctrl-C.")
    ] = None,
    retrain: Annotated[bool, typer.Option(help="Start retraining when the policy fires.")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Check the prediction log for drift with Evidently; start retraining when due."""
    from loopline.monitor_view import render_monitor
    from monitoring.monitor import run_monitor
    from monitoring.policy import PolicyError, load_policy

    settings = _settings()
    try:
        policy = load_policy(settings)
    except PolicyError as exc:
        console.print(f"[red]monitoring configuration error[/]: {exc}")
        raise typer.Exit(2) from None
    pause = _interval(every).total_seconds() if every else None
    while True:
        result = run_monitor(settings, policy, retrain=retrain)
        if json_output:
            typer.echo(json.dumps(dataclasses.asdict(result), default=str))
        else:
            render_monitor(result, console)
        if pause is None:
            raise typer.Exit(1 if any(r.get("state") == "failed" for r in result.retraining) else 0)
        try:
            time.sleep(pause)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


@app.command()
def feedback(
    labels: Annotated[
        Path, typer.Argument(help="CSV with request_id, label and optionally item columns.")
    ],
) -> None:
    """Attach ground-truth labels to served predictions (by request id)."""
    import pandas as pd

    from serving.feedback import FeedbackStore, Label
    from serving.requests import RequestError

    settings = _settings()
    try:
        frame = pd.read_csv(labels, dtype={"request_id": str, "label": str})
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {labels}[/]: {exc}")
        raise typer.Exit(2) from None
    missing = {"request_id", "label"} - set(frame.columns)
    if missing:
        console.print(f"[red]{labels} lacks column(s) {', '.join(sorted(missing))}[/]; "
                      "expected request_id,label[,item]")  # fmt: skip
        raise typer.Exit(2)
    items = frame["item"] if "item" in frame else [0] * len(frame)
    parsed = [
        Label(str(r), int(i), str(lb))
        for r, i, lb in zip(frame["request_id"], items, frame["label"], strict=True)
    ]
    try:
        result = FeedbackStore(settings.prediction_log).attach(parsed)
    except RequestError as exc:
        console.print(f"[red]labels refused[/]: {exc}")
        raise typer.Exit(2) from None
    console.print(
        f"stored {result['stored']} label(s); {result['unknown_count']} had no logged prediction"
    )
    typer.echo(json.dumps(result))


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option(help="Make this version champion instead.")] = None,
    model_name: Annotated[
        str | None, typer.Option("--model", help="Registered model name.")
    ] = None,
) -> None:
    """Move `champion` back to the previous champion (or to --to VERSION)."""
    from components.registry import Registry, RegistryError

    settings = _settings()
    name = model_name or settings.model_name
    registry = Registry(settings)
    try:
        if to is not None:
            before = registry.champion(name)
            registry.version(name, to)  # fails clearly on an unknown version
            registry.promote(name, to)
            moved = (before.version if before else "none", to)
        else:
            moved = registry.rollback(name)
    except RegistryError as exc:
        console.print(f"[red]cannot roll back[/]: {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # MLflow's "version not found"
        console.print(f"[red]cannot roll back[/]: {_first_line(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"{name}: champion moved from v{moved[0]} to v{moved[1]}; "
                  "running servers switch within their poll interval")  # fmt: skip


def _has_champion(settings) -> bool:
    from components.registry import Registry

    return Registry(settings).champion(settings.model_name) is not None


def _interval(text: str):
    from datetime import timedelta

    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise typer.BadParameter("use a number and a unit: 30s, 5m, 2h or 1d", param_hint="--every")
    return timedelta(**{units[unit]: int(number)})


@app.command()
def demo() -> None:
    """Train a digits classifier end to end and make it the champion."""
    from loopline.demo import run_demo

    raise typer.Exit(run_demo(_settings(), console))


def _settings():
    try:
        return load_settings()
    except SettingsError as exc:
        console.print(f"[red]configuration error[/]: {exc}")
        raise typer.Exit(2) from None


def _parse_params(pairs: list[str]) -> dict:
    """NAME=VALUE pairs; unknown names are caught with the pipeline's parameter list."""
    parsed = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        try:
            parsed[name] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[name] = raw
    return parsed


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


def _first_line(text: str | None) -> str:
    return (text or "unknown error").strip().splitlines()[0]


def main() -> None:
    app()
