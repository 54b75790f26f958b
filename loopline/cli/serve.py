"""Serving: the champion over HTTP with BentoML."""

from __future__ import annotations

from typing import Annotated

import typer

from loopline.cli import options
from loopline.cli.options import ModelName, console


def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port on the host.")] = 3000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    version: Annotated[
        str | None, typer.Option(help="Serve this registry version [default: follow the champion].")
    ] = None,
    bento: Annotated[
        str | None, typer.Option(help="Serve a built Bento tag instead of the project's service.")
    ] = None,
    batching: Annotated[bool, typer.Option(help="Adaptive batching across requests.")] = True,
    model: ModelName = None,
) -> None:
    """Serve the champion over HTTP with `bentoml serve` (KServe v1 `/predict`).

    Ctrl-C or SIGTERM stops every server process, after the prediction log is flushed.
    """
    from loopline.core import processes
    from loopline.serving.auth import load_api_key
    from loopline.serving.server import SERVICE, preflight, start_server
    from loopline.storage.database import open_database

    settings = options.model_settings(ctx, model)
    load_api_key(settings.serve)  # a bad key file stops here, exit 2, before any process starts
    open_database(settings, migrate=True).close()  # reachable, and at this code's schema
    servable = preflight(settings, version)
    settings.logs.mkdir(parents=True, exist_ok=True)
    with processes.sigterm_as_interrupt():
        server_ = start_server(
            settings,
            port=port,
            host=host,
            target=bento or SERVICE,
            version=version,
            batching="on" if batching else "off",
            log_path=settings.logs / "serve.log",
        )
        try:
            if servable:
                server_.wait_ready(timeout=300)
            else:
                from loopline.cli.views.status import no_champion
                from loopline.storage.registry import reader

                console.print(no_champion(settings.model_name, reader(settings).models()))
                console.print("The server answers 503 until a champion is promoted.")
            console.print(
                f"[green]serving[/] {settings.model_name} ({version or 'champion'}) at {server_.url}"
            )
            console.print(
                f"  POST {server_.url}/predict   Swagger UI: {server_.url}/   "
                f"metrics: {server_.url}/metrics"
            )
            console.print(
                f"  prediction log: {settings.database_shown}   server log: {server_.log_path}"
            )
            console.print("  Ctrl-C stops the server.")
            server_.process.wait()
            why = server_.gave_up() or f"exit code {server_.process.returncode}"
            console.print(f"[red]the server stopped[/]: {why}; see {server_.log_path}")
            raise typer.Exit(1)
        except KeyboardInterrupt:
            pass
        finally:
            server_.stop()
