"""The `tidings` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tidings import __version__
from tidings.errors import TidingsError

cli = typer.Typer(
    name="tidings",
    help="Tidings: end-to-end encrypted messaging with safety by design.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(exc: TidingsError, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
    else:
        typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(code=1)


@cli.command()
def version(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the Tidings and protocol versions."""
    from tidings.wire import PROTOCOL_VERSION

    if as_json:
        typer.echo(json.dumps({"version": __version__, "protocol_version": PROTOCOL_VERSION}))
    else:
        typer.echo(f"tidings {__version__} (protocol v{PROTOCOL_VERSION})")


@cli.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (SQLite, files).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML configuration file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Errors as JSON.")] = False,
) -> None:
    """Start a server node (embedded SQLite mode unless configured otherwise)."""
    import uvicorn

    from tidings.app import create_app
    from tidings.server.config import ServerConfig

    try:
        cfg = ServerConfig.load(config).with_overrides(host=host, port=port, data_dir=data_dir)
    except TidingsError as exc:
        _fail(exc, as_json)
        return
    app = create_app(cfg)
    typer.echo(f"Tidings {__version__} listening on http://{cfg.host}:{cfg.port} "
               f"(data in {cfg.data_dir.resolve()}); health: /healthz", err=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


def main() -> None:
    cli()
