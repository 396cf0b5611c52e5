"""What every `tidings` command shares: the --json option, the one-line error contract, the
profile and passphrase, the progress bar, and the decorators that turn an async body into a
Typer command.

Every client command works without a terminal (passphrase from TIDINGS_PASSPHRASE), prints
one line per result (or one JSON object / JSON line with --json), prints one-line actionable
errors and exits 1 on error, never a traceback. Nothing secret is printed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import sys
import typing
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, ParamSpec, TypeVar

import typer

from tidings.errors import TidingsError

if TYPE_CHECKING:
    from tidings.client.sdk import Client
    from tidings.client.transport import Progress

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_PROFILE = Path("~/.tidings")
PASSPHRASE_ENV = "TIDINGS_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
# The options of a message, the same on `send`/`send-file` and `group send`/`group send-file`.
TextArg = Annotated[str, typer.Argument(help="Message text.")]
FileArg = Annotated[Path, typer.Argument(help="The file to send.")]
CaptionOpt = Annotated[str, typer.Option(help="Text sent with the file.")]
ContentTypeOpt = Annotated[str, typer.Option(help="MIME type.")]
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class UsageError(TidingsError):
    """A command-line usage problem."""

    code = "usage"


def fail(exc: TidingsError, as_json: bool) -> None:
    """Print ``exc`` as the one-line CLI error (stderr) or the --json error object (stdout),
    then exit 1 (raises typer.Exit)."""
    if as_json:
        typer.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
    else:
        typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(code=1)


def emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    """Print one result: ``data`` as JSON with --json, else the human-readable ``text``."""
    typer.echo(json.dumps(data) if as_json else text)


def iso_utc(ms: int) -> str:
    """``ms`` (Unix time in milliseconds) as ISO 8601 in UTC to the second
    (``2026-01-31T12:00:00+00:00``): how the operator commands print a time."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def iso_utc_or_dash(ms: int | None) -> str:
    """`iso_utc`, or "-" for no time (an empty cell of a listing)."""
    return "-" if ms is None else iso_utc(ms)


def profile_dir(ctx: typer.Context) -> Path:
    """The client profile directory chosen by the root --profile option (or the default)."""
    obj = ctx.find_root().obj or {}
    path: Path = obj.get("profile", DEFAULT_PROFILE.expanduser())
    return path


def passphrase(confirm: bool = False) -> str:
    """The profile passphrase: TIDINGS_PASSPHRASE, else a hidden prompt on a terminal.

    Raises UsageError when neither is available (no terminal, variable unset or empty)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise UsageError(f"no passphrase: set {PASSPHRASE_ENV} or run in a terminal")
    entered: str = typer.prompt("Profile passphrase", hide_input=True,
                                confirmation_prompt=confirm)
    return entered


def run(as_json: bool, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one async command body; typed errors become a one-line message and exit code 1,
    Ctrl-C exits 130."""
    try:
        return asyncio.run(make())
    except TidingsError as exc:
        fail(exc, as_json)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    except Exception as exc:
        # A bug, not bad input: still no traceback for the user, but say what kind it was.
        fail(UsageError(f"unexpected internal error ({exc.__class__.__name__})"), as_json)
    raise AssertionError("unreachable")


@contextmanager
def progress_bar(as_json: bool, label: str) -> Iterator[Progress | None]:
    """A transfer progress bar on stderr; none with --json or when stderr is not a terminal
    (scripts and pipes get clean output)."""
    if as_json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
    from rich.progress import Progress as Bar

    with Bar(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
             console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


def profile_command(
    body: Callable[Concatenate[Path, P], Coroutine[Any, Any, None]],
) -> Callable[P, None]:
    """A Typer command from an async ``body`` whose first parameter is the profile directory.

    Typer sees ``body``'s other parameters (their options and help) plus the Typer context;
    the command resolves --profile, runs ``body`` to completion and maps its errors as `run`
    does, in the format of ``body``'s ``as_json`` parameter (plain text when it has none)."""

    @functools.wraps(body)
    def command(*args: P.args, **kwargs: P.kwargs) -> None:
        ctx = typing.cast("typer.Context", kwargs.pop("ctx"))
        run(bool(kwargs.get("as_json", False)), lambda: body(profile_dir(ctx), *args, **kwargs))

    _copy_signature_but_first(command, body)
    return command


def client_command(
    body: Callable[Concatenate[Client, P], Coroutine[Any, Any, None]],
) -> Callable[P, None]:
    """A Typer command from an async ``body`` whose first parameter is the profile's Client.

    The one place the client commands open a profile: it unlocks --profile with the
    passphrase (TIDINGS_PASSPHRASE or a prompt), runs ``body`` with the open Client, and
    closes the Client however ``body`` ends. A TidingsError (no profile, wrong passphrase,
    any SDK error) becomes the one-line message or the --json error object and exit code 1,
    as in `run`."""

    async def with_client(profile: Path, /, *args: P.args, **kwargs: P.kwargs) -> None:
        from tidings.client.sdk import Client

        async with Client.open(profile, passphrase()) as client:
            await body(client, *args, **kwargs)

    functools.update_wrapper(with_client, body)  # Typer reads body's name, help, parameters
    return profile_command(with_client)


def _copy_signature_but_first(command: Callable[..., None], body: Callable[..., Any]) -> None:
    """Give ``command`` the signature Typer builds its options from: ``body``'s parameters
    after the first, evaluated (Typer reads `Annotated` options from the signature itself),
    behind a ``ctx: typer.Context`` parameter that Typer fills in."""
    first, *rest = inspect.signature(body).parameters.values()
    annotations = {k: v for k, v in body.__annotations__.items() if k not in (first.name, "return")}
    command.__annotations__ = {"ctx": typer.Context, **annotations}
    # Names resolve in the module that wrote the body (get_type_hints follows __wrapped__).
    hints = typing.get_type_hints(command, include_extras=True)
    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            annotation=typer.Context)
    params = [ctx, *(p.replace(annotation=hints[p.name]) for p in rest)]
    signature = inspect.Signature(params, return_annotation=None)
    command.__signature__ = signature  # type: ignore[attr-defined]
