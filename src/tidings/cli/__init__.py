"""The `tidings` command: the root app, composed of one module per surface.

- `server`: `version`, `server` (and the console's first administrator);
- `client`: the client commands on a profile (register, send, receive, verify, report, ...);
- `groups`: `group ...`;
- `operator`: `audit ...` and `admin ...`, on a node's data directory;
- `banks`: `admin bank ...` (hash banks);
- `detection`: `admin detection ...` and `audit detection-list`;
- `transparency`: `transparency` (the transparency report of a period);
- `referrals`: `admin referral ...` (referrals to NCMEC, read-only);
- `lawful`: `admin lawful ...` (lawful requests, read-only) and `audit package`;
- `kt`: `audit kt` and `audit kt witness` (the key directory checked from outside);
- `_common`: the --json/error contract and the decorators that open a profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidings.cli._common import DEFAULT_PROFILE
from tidings.cli.banks import bank_cli
from tidings.cli.client import _status_text as _status_text
from tidings.cli.client import client_cli
from tidings.cli.detection import audit_detection_list, detection_cli
from tidings.cli.groups import group_cli
from tidings.cli.kt import audit_kt
from tidings.cli.lawful import audit_package, lawful_cli
from tidings.cli.operator import admin_cli, audit_cli
from tidings.cli.referrals import referral_cli
from tidings.cli.server import _first_admin as _first_admin
from tidings.cli.server import server_cli
from tidings.cli.transparency import transparency_cli

cli = typer.Typer(
    name="tidings",
    help="Tidings: end-to-end encrypted messaging with safety by design.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@cli.callback()
def _root(
    ctx: typer.Context,
    profile: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            envvar="TIDINGS_PROFILE",
            help="Client profile directory (default ~/.tidings).",
        ),
    ] = None,
) -> None:
    """Tidings: end-to-end encrypted messaging with safety by design."""
    ctx.obj = {"profile": (profile or DEFAULT_PROFILE).expanduser()}


# Unnamed sub-apps merge their commands into the root, in this order (as `tidings --help`
# lists them); named ones become command groups.
cli.add_typer(server_cli)
cli.add_typer(client_cli)
cli.add_typer(group_cli)
audit_cli.command("detection-list")(audit_detection_list)
audit_cli.command("package")(audit_package)
audit_cli.command("kt")(audit_kt)
cli.add_typer(transparency_cli)
cli.add_typer(audit_cli, name="audit")
admin_cli.add_typer(bank_cli, name="bank")
admin_cli.add_typer(detection_cli, name="detection")
admin_cli.add_typer(referral_cli, name="referral")
admin_cli.add_typer(lawful_cli, name="lawful")
cli.add_typer(admin_cli, name="admin")


def main() -> None:
    """The `tidings` console script."""
    cli()
