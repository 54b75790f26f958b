"""The `loopline` command line: run, compile, status and demo.

Exit codes (scripts rely on them): 0 success, 1 the pipeline failed (a failed data
validation included), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
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


@app.command()
def run(
    pipeline: Annotated[str, typer.Argument(help="Built-in pipeline name, e.g. 'training'.")],
    dataset: Annotated[
        str,
        typer.Option(
            help=f"Built-in dataset ({', '.join(BUILTIN)}) or a path: CSV/Parquet "
            "file, image folder (one sub-folder per class) or MNIST IDX folder."
        ),
    ] = "digits",
    label_column: Annotated[
        str, typer.Option(help="Label column of a CSV/Parquet file.")
    ] = "label",
    epochs: Annotated[
        int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")
    ] = 20,
    workers: Annotated[
        int, typer.Option(min=0, help="Ray Train workers; 0 trains in-process without Ray.")
    ] = 2,
    model: Annotated[
        str, typer.Option(help="Architecture: auto, mlp, cnn or tabular_mlp.")
    ] = "auto",
    model_name: Annotated[
        str | None, typer.Option(help="Registered model name [default: <dataset>-classifier].")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed for the split, initialisation and shuffling.")
    ] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="Any pipeline parameter as NAME=VALUE (repeatable), e.g. lr=0.01, "
            "weight_decay=0, augment=false, patience=3, batch_size=32. VALUE is read as JSON "
            "when it parses, else as a string.",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
) -> None:
    """Run a pipeline locally (kfp.local, one subprocess per step) and print a summary."""
    from loopline import summary as run_summary
    from pipelines import catalog
    from pipelines.local_run import run_local

    settings = _settings()
    if pipeline not in catalog.PIPELINES:
        raise typer.BadParameter(
            f"unknown pipeline {pipeline!r}; choose one of {', '.join(catalog.PIPELINES)}",
            param_hint="PIPELINE",
        )
    if dataset not in BUILTIN and not Path(dataset).expanduser().exists():
        raise typer.BadParameter(
            f"{dataset!r} is neither a built-in dataset ({', '.join(BUILTIN)}) nor an existing path",
            param_hint="--dataset",
        )
    if model not in ("auto", "mlp", "cnn", "tabular_mlp"):
        raise typer.BadParameter("choose auto, mlp, cnn or tabular_mlp", param_hint="--model")
    name = model_name or f"{Path(dataset).stem}-classifier"
    arguments = {
        "dataset": str(Path(dataset).expanduser().resolve()) if dataset not in BUILTIN else dataset,
        "model_name": name,
        "label_column": label_column,
        "arch": model,
        "epochs": epochs,
        "workers": workers,
        "seed": seed,
        **_parse_params(param or [], catalog.get(pipeline)),
    }
    console.print(
        f"[bold]loopline[/]: running pipeline {pipeline} on {dataset} ({workers} Ray workers)"
    )
    with _stdout_to_stderr() if json_output else contextlib.nullcontext():
        result = run_local(pipeline, arguments, settings)
    collected = run_summary.collect(result.run_dir, settings) if result.run_dir else {}
    collected["status"] = "succeeded" if result.succeeded else "failed"
    if json_output:
        typer.echo(json.dumps(collected, indent=2))
    elif collected.get("paths"):
        run_summary.render(collected, console)
    if not result.succeeded:
        console.print(f"[red]pipeline {pipeline} failed[/]: {_first_line(result.error)}")
        raise typer.Exit(1)


@app.command("compile")
def compile_(
    pipeline: Annotated[str, typer.Argument(help="Built-in pipeline name, e.g. 'training'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the IR YAML.")],
) -> None:
    """Compile a pipeline to KFP v2 IR YAML for Kubeflow Pipelines."""
    from pipelines import catalog
    from pipelines.compile import compile_pipeline

    if pipeline not in catalog.PIPELINES:
        raise typer.BadParameter(
            f"unknown pipeline {pipeline!r}; choose one of {', '.join(catalog.PIPELINES)}",
            param_hint="PIPELINE",
        )
    console.print(f"wrote {compile_pipeline(pipeline, output)}")


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


def _parse_params(pairs: list[str], pipeline) -> dict:
    known = pipeline.component_spec.inputs
    parsed = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in known:
            raise typer.BadParameter(
                f"{pair!r} is not NAME=VALUE with a parameter of this pipeline "
                f"({', '.join(known)})",
                param_hint="--param",
            )
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
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _first_line(text: str | None) -> str:
    return (text or "unknown error").strip().splitlines()[0]


def main() -> None:
    app()
