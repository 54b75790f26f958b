"""What the commands share: option types, choices, the console and settings.

Importing this module stays cheap (no engine is imported), so `loopline --help` and
`loopline status` answer at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loopline.core import engine_env
from loopline.core.settings import Settings, duration, load_settings
from loopline.ml.builtin_datasets import BUILTIN
from loopline.ml.model_spec import ARCHITECTURES

console = Console(stderr=True)  # stdout is kept for --json answers and printed ids


class Engine(StrEnum):
    prefect = "prefect"
    kfp_local = "kfp-local"


class TargetName(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


Target = Annotated[
    TargetName,
    typer.Option(
        help="The cluster the pipeline is for: cpu, or gpu (the train task gets a GPU, the "
        "CUDA image and GPU nodes; the gpu overlay's cluster)."
    ),
]

Arch = Enum("Arch", {name: name for name in ("auto", *ARCHITECTURES)}, type=str)

ModelName = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Registered model name [default: LOOPLINE_MODEL_NAME when set, else the only "
        "registered model; with several, a terminal is asked and a script must choose].",
    ),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="A pipeline parameter as NAME=VALUE (repeatable), e.g. lr=0.01, augment=false. "
        "VALUE is read as JSON when it parses, else as a string.",
    ),
]
PipelineName = Annotated[
    str | None,
    typer.Option("--pipeline", help="Which @dsl.pipeline of a .py file that holds several."),
]

PipelineSource = Annotated[
    str,
    typer.Argument(
        help="A built-in pipeline (training, retraining), a .py file with a @dsl.pipeline, "
        "or a compiled KFP IR .yaml."
    ),
]
Every = Annotated[
    str | None, typer.Option(help="An interval: 30s, 5m, 2h or 1d.", metavar="DURATION")
]
DATASET_HELP = (
    f"A built-in dataset ({', '.join(BUILTIN)}) or a path: a CSV/Parquet file, an image "
    "folder (one sub-folder per class) or an MNIST IDX folder."
)


def verbose(ctx: typer.Context | None) -> bool:
    """Whether the global ``--verbose`` flag was given."""
    root = ctx.find_root() if ctx is not None else None
    return bool(root and isinstance(root.obj, dict) and root.obj.get("verbose"))


def settings(ctx: typer.Context, model_name: str | None = None) -> Settings:
    """The settings from ``LOOPLINE_*``, with the engines' environment exported for this
    process (state under LOOPLINE_HOME; engine logs to files unless ``--verbose``)."""
    loaded = load_settings()
    if model_name:
        loaded = dataclasses.replace(loaded, model_name=model_name)
    engine_env.apply(loaded, verbose=verbose(ctx))
    return loaded


def model_settings(ctx: typer.Context, model_name: str | None) -> Settings:
    """:func:`settings` for a command that acts on one registered model: ``--model``, else
    ``LOOPLINE_MODEL_NAME`` when set, else the only registered model. With several and no
    choice, a terminal is asked which; a script is told to choose (exit 2), never handed
    one model of several by a default name."""
    loaded = settings(ctx, model_name)
    if model_name or os.environ.get("LOOPLINE_MODEL_NAME"):
        return loaded
    from loopline.storage.registry import reader

    names = reader(loaded).models()
    if not names or names == [loaded.model_name]:
        return loaded  # nothing registered yet: the default name says how to train one
    if len(names) == 1:
        return dataclasses.replace(loaded, model_name=names[0])
    return dataclasses.replace(loaded, model_name=_ask(names))


def _ask(names: list[str]) -> str:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise typer.BadParameter(
            f"{len(names)} models are registered ({', '.join(names)}); choose one with "
            "--model NAME or LOOPLINE_MODEL_NAME",
            param_hint="--model",
        )
    for number, name in enumerate(names, 1):
        console.print(f"  {number}. {name}", highlight=False)
    choices = {str(number): name for number, name in enumerate(names, 1)} | {n: n for n in names}
    while (answer := typer.prompt("Which model (number or name)", err=True).strip()) not in choices:
        console.print(f"{answer!r} is neither a number from 1 to {len(names)} nor a model's name")
    return choices[answer]


def parse_params(pairs: list[str]) -> dict:
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


def dataset(value: str) -> str:
    if value in BUILTIN:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise typer.BadParameter(
            f"{value!r} is neither a built-in dataset ({', '.join(BUILTIN)}) nor an existing path",
            param_hint="--dataset",
        )
    return str(path.resolve())


def seconds(text: str, option: str) -> float:
    try:
        return duration(text, option, allow_zero=False)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def first_line(text: str | None) -> str:
    return (text or "unknown error").strip().splitlines()[0]
