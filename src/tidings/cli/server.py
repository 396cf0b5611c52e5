"""`tidings version` and `tidings server`: run a node, and on its first start create the
console's first administrator."""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings import __version__
from tidings.cli._common import fail
from tidings.errors import TidingsError

server_cli = typer.Typer()

FIRST_ADMIN_FILE = "first-admin.txt"


@server_cli.command()
def version(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the Tidings and protocol versions."""
    from tidings.wire import PROTOCOL_VERSION

    if as_json:
        typer.echo(json.dumps({"version": __version__, "protocol_version": PROTOCOL_VERSION}))
    else:
        typer.echo(f"tidings {__version__} (protocol v{PROTOCOL_VERSION})")


@server_cli.command()
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
    from tidings.server.collector import CollectorPacer
    from tidings.server.config import ServerConfig
    from tidings.server.logs import log_config
    from tidings.server.serving import uvicorn_config

    try:
        cfg = ServerConfig.load(config).with_overrides(host=host, port=port, data_dir=data_dir)
    except TidingsError as exc:
        fail(exc, as_json)
        return
    app = create_app(cfg)
    _first_admin(app.state.safety, f"http://{cfg.host}:{cfg.port}/console", cfg.data_dir)
    typer.echo(f"Tidings {__version__} listening on http://{cfg.host}:{cfg.port} "
               f"(data in {cfg.data_dir.resolve()}); health: /healthz", err=True)
    # JSON lines; uvicorn's access log is off because it prints raw paths (usernames, ids):
    # tidings.access logs route templates instead. Every limit uvicorn enforces (WebSocket
    # frame size, header timeout, proxy headers) comes from tidings.server.serving.
    node = uvicorn.Server(uvicorn_config(app, cfg, log_config=log_config(cfg.log_level)))
    # Full collections scan only what is new (issue 9: with 10,000 idle sockets each one held
    # the event loop for 1-3 s); a whole one runs hourly. See tidings.server.collector.
    pacer = CollectorPacer()
    pacer.install()
    try:
        with suppress(KeyboardInterrupt):
            node.run()
    finally:
        pacer.uninstall()
    if not node.started:
        raise typer.Exit(code=3)  # uvicorn's STARTUP_FAILURE (port taken, startup failed)


def _first_admin(safety: Any, console_url: str, data_dir: Path) -> None:
    """On an empty staff table, create the first admin and write its credentials to
    ``<data_dir>/first-admin.txt`` (mode 0600): the one account whose secrets its creator knows.
    stdout/stderr (which end up in service logs) get only the path, never a secret."""
    from tidings.storage.files import write_private

    safety.migrate()
    first = safety.ensure_first_admin()
    if first is None:
        return
    path = (data_dir / FIRST_ADMIN_FILE).resolve()
    body = "\n".join(
        (
            "Tidings console: the first administrator (delete this file once enrolled).",
            f"console:     {console_url}",
            f"username:    {first.totp.username}",
            f"password:    {first.password}",
            f"TOTP secret: {first.totp.secret}",
            f"TOTP URI:    {first.totp.uri}",
            "",
        )
    )
    write_private(path, body.encode("utf-8"))
    typer.echo(
        "\n".join(
            (
                "",
                "First start: created the console administrator.",
                f"  Its username, password and TOTP secret are in {path} (readable by this user",
                "  only). Add the secret to an authenticator app, sign in at "
                f"{console_url},",
                "  then delete the file. New staff get enrolment links (Staff page, or",
                "  `tidings admin create-staff`); a second admin must approve their roles.",
                "",
            )
        ),
        err=True,
    )
