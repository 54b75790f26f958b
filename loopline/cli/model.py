"""Models: the champion's status, rollback, and packaging it as a Bento."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from loopline.cli import options
from loopline.cli.options import JsonOutput, ModelName, console


def status(ctx: typer.Context, model: ModelName = None, json_output: JsonOutput = False) -> None:
    """Show the champion and its metrics, the last gate decision, the last drift check,
    the last retraining and pending triggers. Reads only; changes nothing."""
    from loopline.cli.views.status import collect, render

    settings = options.model_settings(ctx, model)
    result = collect(settings)
    if json_output:
        typer.echo(json.dumps(result, indent=2))
    else:
        render(result, console)


def rollback(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option(help="Make this version champion instead.")] = None,
    model: ModelName = None,
) -> None:
    """Move `champion` back to the previous champion (or to --to VERSION)."""
    from loopline.storage.registry import Registry

    settings = options.model_settings(ctx, model)
    name = settings.model_name
    registry = Registry(settings)
    if to is not None:
        before = registry.champion(name)
        registry.version(name, to)  # fails clearly on an unknown version
        registry.promote(name, to)
        moved = (before.version if before else "none", to)
    else:
        moved = registry.rollback(name)
    console.print(
        f"{name}: champion moved from v{moved[0]} to v{moved[1]}; "
        "running servers switch within their poll interval"
    )


def package(
    ctx: typer.Context,
    version: Annotated[
        str | None, typer.Option(help="Registry version to package [default: the champion].")
    ] = None,
    model: ModelName = None,
) -> None:
    """Build a Bento for the champion: service, Python packages, model reference."""
    from loopline.serving.bento import build_bento

    settings = options.model_settings(ctx, model)
    built = build_bento(settings, version=version)
    console.print(f"built Bento {built.tag} for {built.model_name} version {built.model_version}")
    console.print(f"  files: {built.path}")
    console.print(
        f"  container image: BENTOML_HOME={settings.bentoml_home} bentoml containerize {built.tag}"
    )
    typer.echo(built.tag)


def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the platform database (LOOPLINE_DATABASE_URL) to this schema."""
    from loopline.storage.database import open_database

    settings = options.settings(ctx)
    database = open_database(settings, migrate=True)
    database.close()
    before, after = database.migrated
    console.print(
        f"database {settings.database_shown}: schema {before or 'none'} -> {after}"
        + (" (already current)" if before == after else "")
    )
