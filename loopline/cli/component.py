"""Components: create, check, publish and browse the versioned component catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from loopline.cli import options
from loopline.cli.options import JsonOutput, console

ComponentPath = Annotated[
    Path, typer.Argument(help="A component folder (with component.py), or its component.py.")
]
Owner = Annotated[
    str | None, typer.Option(help="Who answers for it [default: component.toml's, or you].")
]


def new(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The component's name, e.g. normalize-features.")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create NAME/.")] = Path("."),
    owner: Owner = None,
) -> None:
    """Create NAME/: a typed component with a docstring, an example, a test and a README."""
    from loopline.catalog.folder import scaffold

    folder = scaffold(name, directory, owner)
    console.print(f"created {folder}/: component.py, component.toml, test_component.py, README.md")
    console.print(f"next: loopline component check {folder}")


def check(ctx: typer.Context, path: ComponentPath, json_output: JsonOutput = False) -> None:
    """Apply the catalog's contract checks; exit 0 when all pass, 1 when one fails."""
    from loopline.catalog import checks
    from loopline.catalog.folder import read

    settings = options.settings(ctx)
    folder = read(path)
    report = checks.check(folder, settings)
    if json_output:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        console.print(checks.describe(report), markup=False, soft_wrap=True)
        verdict = "passes every check" if report.passed else "fails its checks"
        console.print(f"{folder.name}: {verdict}")
    if not report.passed:
        raise typer.Exit(1)


def publish(
    ctx: typer.Context,
    path: ComponentPath,
    version: Annotated[str, typer.Option(help="MAJOR.MINOR.PATCH; never reused.")],
    changelog: Annotated[str, typer.Option(help="What changed, for the catalog page.")] = "",
    owner: Owner = None,
    json_output: JsonOutput = False,
) -> None:
    """Check the component, then store it in the catalog as VERSION (compiled KFP YAML,
    source digest, owner, changelog, check report)."""
    from loopline import catalog
    from loopline.catalog import checks, page
    from loopline.catalog.folder import read
    from loopline.core.semver import Version

    settings = options.settings(ctx)
    number = Version.parse(version)  # a malformed version fails before the checks run
    folder = read(path)
    report = checks.check(folder, settings)
    if not report.passed:
        console.print(checks.describe(report), markup=False, soft_wrap=True)
        failed = ", ".join(r.name for r in report.failures())
        console.print(f"[red]not published[/]: {folder.name} fails {failed}")
        raise typer.Exit(1)
    with catalog.opened(settings) as store:
        entry = catalog.publish_checked(
            store, folder, number, report, changelog=changelog, owner=owner
        )
        written = page.write(store, settings.home / "catalog" / "index.html")
    if json_output:
        typer.echo(json.dumps(entry.to_json(), indent=2))
    console.print(f"published {entry.name} {entry.version} (digest {entry.digest[:12]})")
    console.print(f"catalog page: {written}")


def list_(ctx: typer.Context, json_output: JsonOutput = False) -> None:
    """The catalog's components, each at its newest version."""
    from loopline import catalog

    with catalog.opened(options.settings(ctx)) as store:
        entries = store.latest()
    if json_output:
        typer.echo(json.dumps([e.to_json() for e in entries], indent=2))
        return
    if not entries:
        console.print("the catalog is empty: `loopline component new NAME`, then publish it")
    for e in entries:
        note = f"  [yellow]deprecated: {e.deprecated}[/]" if e.deprecated else ""
        console.print(f"{e.name:24} {str(e.version):10} {e.owner:24} {e.description}{note}")


def show(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="NAME or NAME@RANGE, e.g. normalize@^1.")],
    json_output: JsonOutput = False,
    source: Annotated[bool, typer.Option(help="With --json: the source and YAML too.")] = False,
) -> None:
    """One component: interface, versions, owner, check report."""
    from loopline import catalog
    from loopline.catalog.interface import describe
    from loopline.catalog.references import parse_reference

    name, wanted = parse_reference(reference)
    with catalog.opened(options.settings(ctx)) as store:
        entry = store.get(name, wanted.text)
        versions = store.versions(name)
        uses = store.uses().get(name, [])
    if json_output:
        shown = entry.to_json(full=source)
        shown["versions"] = [str(v.version) for v in versions]
        shown["used_by"] = [{"pipeline": p, "version": v} for p, v in uses]
        typer.echo(json.dumps(shown, indent=2))
        return
    console.print(f"[bold]{entry.name} {entry.version}[/]  owner {entry.owner}", soft_wrap=True)
    if entry.deprecated:
        console.print(f"[yellow]deprecated[/]: {entry.deprecated}")
    console.print(entry.description, markup=False)
    console.print(describe(entry.interface), markup=False)
    console.print("versions: " + ", ".join(str(v.version) for v in versions))
    failed = [c["name"] for c in entry.report.get("checks", []) if not c["passed"]]
    console.print("checks: " + ("all passed" if not failed else "failed " + ", ".join(failed)))
    for pipeline, version in uses:
        console.print(f"used by {pipeline} ({version})", markup=False)


def deprecate(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="NAME@VERSION, e.g. normalize@1.0.0.")],
    message: Annotated[str, typer.Option(help="Why, and what to use instead.")],
) -> None:
    """Mark a version deprecated: it still loads, and `loopline run` warns about it."""
    from loopline import catalog
    from loopline.catalog import page

    name, _, version = reference.partition("@")
    if not version:
        raise typer.BadParameter("give NAME@VERSION, e.g. normalize@1.0.0", param_hint="NAME")
    settings = options.settings(ctx)
    with catalog.opened(settings) as store:
        entry = store.deprecate(name, version, message)
        page.write(store, settings.home / "catalog" / "index.html")
    console.print(f"{entry.name} {entry.version} is deprecated: {message}", markup=False)


def page_(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write it.")
    ] = None,
) -> None:
    """Write the catalog's HTML page [default: LOOPLINE_HOME/catalog/index.html]."""
    from loopline import catalog
    from loopline.catalog import page

    settings = options.settings(ctx)
    with catalog.opened(settings) as store:
        written = page.write(store, output or settings.home / "catalog" / "index.html")
    typer.echo(str(written))


def publish_builtins(ctx: typer.Context) -> None:
    """Check and publish loopline's own components (loopline-ingest, -train, ...) at
    loopline's version; their example is one small run of the training pipeline."""
    from loopline.catalog import builtin_components as builtins

    for name, outcome in builtins.publish(options.settings(ctx)):
        console.print(f"{name}: {outcome}")


COMMANDS = {
    "new": new,
    "check": check,
    "publish": publish,
    "list": list_,
    "show": show,
    "deprecate": deprecate,
    "page": page_,
    "publish-builtins": publish_builtins,
}
