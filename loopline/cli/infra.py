"""Infrastructure: the release's images, and deploying an overlay to a cluster."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from loopline.cli import options
from loopline.cli.options import JsonOutput, console


def images(ctx: typer.Context, json_output: JsonOutput = False) -> None:
    """Print this release's image tags and the command that builds each."""
    from loopline.core import images as release

    found = release.release(options.settings(ctx).model_name)
    if json_output:
        typer.echo(json.dumps([{"name": i.name, "tag": i.tag, "build": i.build} for i in found]))
        return
    console.print(f"[bold]loopline {release.VERSION} images[/]")
    for image in found:  # whole lines, to copy
        console.print(f"{image.name}: {image.tag}\n  build: {image.build}", soft_wrap=True)


def deploy(
    ctx: typer.Context,
    overlay: Annotated[
        str, typer.Option(help="infra/k8s/overlays/NAME: local, production or gpu.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the manifests instead of applying them.")
    ] = False,
    model: options.ModelName = None,
) -> None:
    """Render an overlay with this release's images and settings, and apply it (kubectl):
    the serving Deployment serves --model (its Bento image and LOOPLINE_MODEL_NAME)."""
    from loopline.cli import deploy as deployment

    documents = deployment.render(overlay, options.model_settings(ctx, model))
    if dry_run:
        typer.echo(deployment.to_yaml(documents), nl=False)
        return
    console.print(deployment.apply(documents), soft_wrap=True)
    console.print(f"applied overlay {overlay}: {len(documents)} objects")
