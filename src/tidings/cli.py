"""The `tidings` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tidings import __version__
from tidings.errors import TidingsError

if TYPE_CHECKING:
    from tidings.client.sdk import Client, ReceiveEvent
    from tidings.client.transport import Progress

T = TypeVar("T")

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
    from tidings.server.logs import log_config
    from tidings.server.serving import uvicorn_config

    try:
        cfg = ServerConfig.load(config).with_overrides(host=host, port=port, data_dir=data_dir)
    except TidingsError as exc:
        _fail(exc, as_json)
        return
    app = create_app(cfg)
    _first_admin(app.state.safety, f"http://{cfg.host}:{cfg.port}/console", cfg.data_dir)
    typer.echo(
        f"Tidings {__version__} listening on http://{cfg.host}:{cfg.port} "
        f"(data in {cfg.data_dir.resolve()}); health: /healthz",
        err=True,
    )
    # JSON lines; uvicorn's access log is off because it prints raw paths (usernames, ids):
    # tidings.access logs route templates instead. Every limit uvicorn enforces (WebSocket
    # frame size, header timeout, proxy headers) comes from tidings.server.serving.
    node = uvicorn.Server(uvicorn_config(app, cfg, log_config=log_config(cfg.log_level)))
    with suppress(KeyboardInterrupt):
        node.run()
    if not node.started:
        raise typer.Exit(code=3)  # uvicorn's STARTUP_FAILURE (port taken, startup failed)


# --- client commands --------------------------------------------------------------------------
#
# Every client command: works without a terminal (passphrase from TIDINGS_PASSPHRASE), prints
# one line per result (or one JSON object / JSON line with --json), prints one-line actionable
# errors and exits 1 on error, never a traceback. Nothing secret is printed.

DEFAULT_PROFILE = Path("~/.tidings")
PASSPHRASE_ENV = "TIDINGS_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


class _CliError(TidingsError):
    """A command-line usage problem."""

    code = "usage"


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


def _profile(ctx: typer.Context) -> Path:
    obj = ctx.find_root().obj or {}
    path: Path = obj.get("profile", DEFAULT_PROFILE.expanduser())
    return path


def _passphrase(confirm: bool = False) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise _CliError(f"no passphrase: set {PASSPHRASE_ENV} or run in a terminal")
    entered: str = typer.prompt("Profile passphrase", hide_input=True, confirmation_prompt=confirm)
    return entered


def _run(as_json: bool, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one async command body; typed errors become a one-line message and exit code 1."""
    try:
        return asyncio.run(make())
    except TidingsError as exc:
        _fail(exc, as_json)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    except Exception as exc:
        # A bug, not bad input: still no traceback for the user, but say what kind it was.
        _fail(_CliError(f"unexpected internal error ({exc.__class__.__name__})"), as_json)
    raise AssertionError("unreachable")


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(data) if as_json else text)


@contextmanager
def _progress(as_json: bool, label: str) -> Iterator[Progress | None]:
    """A transfer progress bar on stderr; none with --json or when stderr is not a terminal
    (scripts and pipes get clean output)."""
    if as_json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


async def _open(ctx: typer.Context) -> Client:
    from tidings.client.sdk import Client

    return Client.open(_profile(ctx), _passphrase())


@cli.command()
def register(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The account name to create.")],
    server_url: Annotated[str, typer.Option("--server", help="Server base URL.")],
    device_name: Annotated[str, typer.Option(help="A name for this device.")] = "primary",
    as_json: JsonOpt = False,
) -> None:
    """Create an account and this device's keys (profile encrypted with your passphrase)."""
    from tidings.client.sdk import Client

    async def body() -> None:
        client = await Client.register(
            _profile(ctx),
            _passphrase(confirm=True),
            username,
            server_url,
            device_name=device_name,
        )
        async with client:
            a = client.account
            _emit(
                as_json,
                {
                    "username": a.username,
                    "device_id": a.device_id,
                    "server": a.server_url,
                    "profile": str(_profile(ctx)),
                },
                f"registered {a.username} (device {a.device_id}) on {a.server_url}; "
                f"profile in {_profile(ctx)}",
            )

    _run(as_json, body)


@cli.command("link-code")
def link_code(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """On an existing device: make a one-time code to link a new device (valid 10 minutes)."""

    async def body() -> None:
        async with await _open(ctx) as client:
            code, expires = await client.create_link_code()
            _emit(
                as_json,
                {"code": code, "expires_at_ms": expires, "username": client.account.username},
                f"link code: {code} (on the new device: tidings --profile DIR link "
                f"{client.account.username} --code {code} --server {client.account.server_url})",
            )

    _run(as_json, body)


@cli.command()
def link(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The existing account to join.")],
    code: Annotated[str, typer.Option("--code", help="Code from `tidings link-code`.")],
    server_url: Annotated[str, typer.Option("--server", help="Server base URL.")],
    device_name: Annotated[str, typer.Option(help="A name for this device.")] = "linked",
    as_json: JsonOpt = False,
) -> None:
    """Make this profile a new device of an existing account."""
    from tidings.client.sdk import Client

    async def body() -> None:
        client = await Client.link(
            _profile(ctx),
            _passphrase(confirm=True),
            username,
            code,
            server_url,
            device_name=device_name,
        )
        async with client:
            a = client.account
            _emit(
                as_json,
                {
                    "username": a.username,
                    "device_id": a.device_id,
                    "server": a.server_url,
                    "profile": str(_profile(ctx)),
                },
                f"linked as {a.username} device {a.device_id}",
            )

    _run(as_json, body)


@cli.command()
def send(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Recipient account.")],
    text: Annotated[str, typer.Argument(help="Message text.")],
    as_json: JsonOpt = False,
) -> None:
    """Send a text message to every device of USERNAME (and a copy to your other devices)."""

    async def body() -> None:
        async with await _open(ctx) as client:
            sent = await client.send_text(username, text)
            line = f"sent to {username} ({sent.devices} device(s))"
            if sent.synced_devices:
                line += f", synced to {sent.synced_devices} own device(s)"
            if sent.sync_error:
                line += f"; copy to own devices failed ({sent.sync_error})"
            _emit(as_json, sent.to_dict(), line)

    _run(as_json, body)


@cli.command("send-file")
def send_file(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Recipient account.")],
    path: Annotated[Path, typer.Argument(help="The file to send.")],
    caption: Annotated[str, typer.Option(help="Text sent with the file.")] = "",
    content_type: Annotated[str, typer.Option(help="MIME type.")] = "application/octet-stream",
    as_json: JsonOpt = False,
) -> None:
    """Encrypt and send a file (the server stores only ciphertext)."""

    async def body() -> None:
        async with await _open(ctx) as client:
            with _progress(as_json, f"uploading {path.name}") as progress:
                sent = await client.send_file(
                    username, path, caption=caption, content_type=content_type, progress=progress
                )
            _emit(
                as_json,
                sent.to_dict(),
                f"sent {path.name} to {username} ({sent.devices} device(s))",
            )

    _run(as_json, body)


@cli.command()
def download(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(help="Message id (from `messages --json`).")],
    destination: Annotated[Path, typer.Argument(help="File or directory to write.")],
    index: Annotated[int, typer.Option(help="Which attachment of the message.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify and decrypt an attachment of a received message."""

    async def body() -> None:
        async with await _open(ctx) as client:
            with _progress(as_json, "downloading") as progress:
                written = await client.download_attachment(
                    message_id, destination, index=index, progress=progress
                )
            _emit(as_json, {"path": str(written)}, f"saved {written}")

    _run(as_json, body)


def _event_line(ev: ReceiveEvent) -> str:
    who = f"{ev.sender}.{ev.sender_device}"
    warn = f"warning: the safety number with {ev.sender} changed\n" if ev.identity_changed else ""
    if ev.message is not None and ev.message.group_id is not None:
        where = f"[group {ev.message.group_id}]"
        text = ev.message.body or ev.message.notice
        if ev.message.body and ev.message.notice:
            text = f"{ev.message.notice}: {ev.message.body}"
        files = "".join(
            f" [file {a.file_name}, {a.size} bytes; message {ev.message.id}]"
            for a in ev.message.attachments
        )
        return f"{warn}{where} {who}: {text}{files}"
    if ev.kind == "message" and ev.message is not None:
        files = "".join(
            f" [file {a.file_name}, {a.size} bytes; message {ev.message.id}]"
            for a in ev.message.attachments
        )
        return f"{warn}{who}: {ev.message.body}{files}"
    if ev.kind == "sync" and ev.message is not None:
        return f"(sent from device {ev.sender_device}) to {ev.message.peer}: {ev.message.body}"
    if ev.kind == "receipt":
        return f"{warn}{ev.sender}: {ev.code}"
    if ev.kind == "rejected":
        return f"refused a message from {who} ({ev.code})"
    return f"{ev.kind} from {who}"


@cli.command()
def receive(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep receiving.")] = False,
    poll: Annotated[
        bool, typer.Option("--poll", help="Use HTTP polling, not the WebSocket.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Receive queued messages (then exit, or keep listening with --follow).

    With --json, prints one JSON object per event (one per line). Every message is printed
    exactly once across runs, even when a run is cut short (server crash, Ctrl-C): it is
    marked shown only after its line is written and flushed, and a run starts with what an
    earlier run stored but did not print."""

    async def body() -> None:
        async with await _open(ctx) as client:

            def show(ev: ReceiveEvent) -> None:
                # Printed as it arrives (not after the backlog), flushed before the SDK marks
                # it delivered: a run that dies later has already shown it.
                if ev.kind not in ("duplicate", "ignored", "key"):
                    _emit(as_json, ev.to_dict(), _event_line(ev))
                    sys.stdout.flush()

            if poll and not follow:
                await client.poll(on_event=show)
                return
            await client.listen(follow=follow, on_event=show)

    _run(as_json, body)


@cli.command()
def messages(
    ctx: typer.Context,
    username: Annotated[
        str | None, typer.Argument(help="Only this conversation (an account or a group).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the local message history."""

    async def body() -> None:
        async with await _open(ctx) as client:
            history = client.messages(username)
            if username is not None and not history:
                # Not a contact with history: maybe a group (id, id prefix or title).
                from tidings.client.errors import UnknownGroupError

                with suppress(UnknownGroupError):
                    history = client.messages(client.group(username).peer)
            if as_json:
                typer.echo(json.dumps({"messages": [m.to_dict() for m in history]}))
                return
            for m in history:
                arrow = f"-> {m.peer}" if m.direction == "out" else f"<- {m.sender}"
                if m.group_id is not None:
                    arrow = f"[group {m.group_id}] {m.sender}.{m.sender_device}"
                text = m.body if not m.notice else f"({m.notice}) {m.body}".rstrip()
                typer.echo(f"{arrow} [{m.status}] {text}")

    _run(as_json, body)


@cli.command("safety-number")
def safety_number(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The contact.")],
    as_json: JsonOpt = False,
) -> None:
    """Show the safety numbers with USERNAME's devices, to compare out of band."""

    async def body() -> None:
        async with await _open(ctx) as client:
            safety = await client.safety_numbers(username)
            lines = [
                f"{username} device {d.device_id}: {d.safety_number}"
                + (" (verified)" if d.verified else "")
                for d in safety.devices
            ]
            if safety.blocked:
                lines.append(
                    f"warning: {username}'s keys changed since you verified them; "
                    f"compare again, then run `tidings verify {username}`"
                )
            elif safety.events:
                lines.append(
                    f"note: {username}'s devices changed "
                    f"({', '.join(e.kind for e in safety.events)})"
                )
            _emit(as_json, safety.to_dict(), "\n".join(lines) or f"{username} has no devices")

    _run(as_json, body)


@cli.command()
def verify(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The contact you compared numbers with.")],
    number: Annotated[
        str | None, typer.Option("--number", help="The safety number you were shown.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark USERNAME verified (after comparing safety numbers); --number checks it first."""

    async def body() -> None:
        async with await _open(ctx) as client:
            safety = await client.verify(username, number)
            _emit(
                as_json, safety.to_dict(), f"{username} verified ({len(safety.devices)} device(s))"
            )

    _run(as_json, body)


@cli.command()
def devices(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List this account's devices."""

    async def body() -> None:
        async with await _open(ctx) as client:
            listed = await client.devices()
            me = client.account.device_id
            lines = [
                f"device {d.get('device_id')}: {d.get('name', '')}"
                + (" (this device)" if d.get("device_id") == me else "")
                for d in listed
            ]
            _emit(as_json, {"devices": listed}, "\n".join(lines))

    _run(as_json, body)


# --- groups -----------------------------------------------------------------------------------

group_cli = typer.Typer(
    name="group",
    help="Group chats: create, change members, leave, send, list.",
    no_args_is_help=True,
)
cli.add_typer(group_cli)

GroupArg = Annotated[str, typer.Argument(help="Group id, unique id prefix or unique title.")]


def _group_line(verb: str, result: Any) -> str:
    line = f"{verb} {result.group.title} ({result.group.id}), {result.devices} device(s)"
    if result.failed:
        line += "; not reached: " + ", ".join(f"{a} ({c})" for a, c in result.failed.items())
    return line


@group_cli.command("create")
def group_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The group's title.")],
    members: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="A member account (repeat).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group with you and the --member accounts."""

    async def body() -> None:
        async with await _open(ctx) as client:
            result = await client.create_group(name, list(members or []))
            _emit(as_json, result.to_dict(), _group_line("created", result))

    _run(as_json, body)


@group_cli.command("add")
def group_add(
    ctx: typer.Context,
    group: GroupArg,
    users: Annotated[list[str], typer.Argument(help="Account(s) to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add members to a group (they see messages from now on only)."""

    async def body() -> None:
        async with await _open(ctx) as client:
            result = await client.add_group_members(group, users)
            _emit(as_json, result.to_dict(), _group_line("updated", result))

    _run(as_json, body)


@group_cli.command("remove")
def group_remove(
    ctx: typer.Context,
    group: GroupArg,
    users: Annotated[list[str], typer.Argument(help="Account(s) to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove members from a group (keys rotate: they cannot read later messages)."""

    async def body() -> None:
        async with await _open(ctx) as client:
            result = await client.remove_group_members(group, users)
            _emit(as_json, result.to_dict(), _group_line("updated", result))

    _run(as_json, body)


@group_cli.command("leave")
def group_leave(ctx: typer.Context, group: GroupArg, as_json: JsonOpt = False) -> None:
    """Leave a group (the history stays on this device)."""

    async def body() -> None:
        async with await _open(ctx) as client:
            result = await client.leave_group(group)
            _emit(as_json, result.to_dict(), f"left {result.group.title}")

    _run(as_json, body)


@group_cli.command("send")
def group_send(
    ctx: typer.Context,
    group: GroupArg,
    text: Annotated[str, typer.Argument(help="Message text.")],
    as_json: JsonOpt = False,
) -> None:
    """Send a text message to every member of a group."""

    async def body() -> None:
        async with await _open(ctx) as client:
            result = await client.send_group_text(group, text)
            _emit(as_json, result.to_dict(), _group_line("sent to", result))

    _run(as_json, body)


@group_cli.command("send-file")
def group_send_file(
    ctx: typer.Context,
    group: GroupArg,
    path: Annotated[Path, typer.Argument(help="The file to send.")],
    caption: Annotated[str, typer.Option(help="Text sent with the file.")] = "",
    content_type: Annotated[str, typer.Option(help="MIME type.")] = "application/octet-stream",
    as_json: JsonOpt = False,
) -> None:
    """Encrypt and send a file to a group."""

    async def body() -> None:
        async with await _open(ctx) as client:
            with _progress(as_json, f"uploading {path.name}") as progress:
                result = await client.send_group_file(
                    group, path, caption=caption, content_type=content_type, progress=progress
                )
            _emit(as_json, result.to_dict(), _group_line(f"sent {path.name} to", result))

    _run(as_json, body)


@group_cli.command("list")
def group_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the groups this device knows."""

    async def body() -> None:
        async with await _open(ctx) as client:
            groups = client.groups()
            lines = [
                f"{g.id}  {g.title}  ({', '.join(g.members)})" + ("" if g.active else "  [left]")
                for g in groups
            ]
            _emit(
                as_json, {"groups": [g.to_dict() for g in groups]}, "\n".join(lines) or "no groups"
            )

    _run(as_json, body)


# --- reports, account status, appeals -----------------------------------------------------------


@cli.command()
def report(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(help="Message id (from `messages --json`).")],
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="child_sexual_exploitation, violent_threat, terrorism, "
            "harassment, self_harm, spam, fraud or other.",
        ),
    ],
    context: Annotated[
        int, typer.Option("--context", help="Messages of context before and after (0-50).")
    ] = 5,
    note: Annotated[str | None, typer.Option("--note", help="A note for the reviewers.")] = None,
    block: Annotated[bool, typer.Option("--block", help="Also block the sender.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Report a received message to the provider's trust & safety team.

    The message is revealed to the provider with its franking proof, plus up to --context
    messages around it from the same conversation; nothing else of your chats is."""

    async def body() -> None:
        async with await _open(ctx) as client:
            answer = await client.report(
                message_id, reason, context=context, note=note, block=block
            )
            _emit(
                as_json,
                answer,
                f"reported ({answer['items']} message(s) sent); report "
                f"{answer.get('report_id')}, case {answer.get('case_id')}"
                + ("; sender blocked" if block else ""),
            )

    _run(as_json, body)


@cli.command()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show whether the provider took action on your account, and how to appeal."""

    async def body() -> None:
        async with await _open(ctx) as client:
            state = await client.account_status()
            _emit(as_json, state, _status_text(state))

    _run(as_json, body)


def _status_text(state: dict[str, Any]) -> str:
    kind = str(state.get("status", "unknown"))
    if kind == "active":
        return "your account is in good standing"
    lines = [
        f"your account is {kind}"
        + (f" until {_when(state['until_ms'])}" if state.get("until_ms") else "")
    ]
    if state.get("policy") or state.get("reason"):
        lines.append(f"reason: {state.get('policy') or ''} {state.get('reason') or ''}".strip())
    appeal_state = state.get("appeal")
    if isinstance(appeal_state, dict):
        outcome = appeal_state.get("outcome")
        lines.append(f"appeal: {appeal_state.get('state')}" + (f" ({outcome})" if outcome else ""))
    elif state.get("decision_id"):
        lines.append(f'to appeal: tidings appeal {state["decision_id"]} "why this is wrong"')
    return "\n".join(lines)


def _when(ms: object) -> str:
    import datetime

    if not isinstance(ms, int):
        return str(ms)
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M UTC"
    )


@cli.command()
def appeal(
    ctx: typer.Context,
    decision_id: Annotated[str, typer.Argument(help="The decision (from `tidings status`).")],
    text: Annotated[str, typer.Argument(help="Why the decision is wrong.")],
    as_json: JsonOpt = False,
) -> None:
    """Appeal a decision the provider took on your account."""

    async def body() -> None:
        async with await _open(ctx) as client:
            answer = await client.appeal(decision_id, text)
            _emit(as_json, answer, f"appeal {answer.get('appeal_id')} submitted")

    _run(as_json, body)


@cli.command()
def chat(ctx: typer.Context) -> None:
    """Open the interactive chat (terminal UI): conversations, messages, groups, files."""
    from tidings.client.tui import ChatApp

    async def body() -> None:
        async with await _open(ctx) as client:
            await ChatApp(client).run_async()

    _run(False, body)


# --- operator commands: audit, admin -------------------------------------------------------------

audit_cli = typer.Typer(help="Check the tamper-evident audit log.", no_args_is_help=True)
admin_cli = typer.Typer(help="Operate the trust & safety side.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")
cli.add_typer(admin_cli, name="admin")

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Server data directory (SQLite, key files).")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Server TOML configuration.")]
DatabaseUrlOpt = Annotated[
    str | None, typer.Option("--database-url", help="Database URL (overrides the data dir).")
]


FIRST_ADMIN_FILE = "first-admin.txt"


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
            f"username:    {first.username}",
            f"password:    {first.password}",
            f"TOTP secret: {first.totp_secret}",
            f"TOTP URI:    {first.otpauth_uri}",
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
                f"  only). Add the secret to an authenticator app, sign in at {console_url},",
                "  then delete the file. New staff get enrolment links (Staff page, or",
                "  `tidings admin create-staff`); a second admin must approve their roles.",
                "",
            )
        ),
        err=True,
    )


def _server_config(config: Path | None, data_dir: Path | None, database_url: str | None) -> Any:
    from tidings.server.config import ServerConfig

    return ServerConfig.load(config).with_overrides(data_dir=data_dir, database_url=database_url)


@audit_cli.command("verify")
def audit_verify(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    anchor_key_file: Annotated[
        Path | None,
        typer.Option(help="Audit anchor key (default <data-dir>/audit_anchor.key if present)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the audit log's hash chain (and anchors, with the key): exit 1 at the first bad
    entry, naming its seq and why (edited, removed, reordered, inserted, ...)."""
    from sqlalchemy.exc import SQLAlchemyError

    from tidings.safety.audit import verify_chain
    from tidings.safety.sql import SafetyDatabase, SqlAuditRepository
    from tidings.storage.database import sqlite_url

    try:
        cfg = _server_config(config, data_dir, database_url)
        key_path = anchor_key_file or cfg.data_dir / "audit_anchor.key"
        anchor = key_path.read_bytes() if key_path.is_file() else None
        if anchor_key_file is not None and anchor is None:
            raise _CliError(f"no anchor key file at {anchor_key_file}")
        db = SafetyDatabase(
            cfg.database_url or sqlite_url(cfg.data_dir), schema=cfg.database_schema
        )
        if db.is_sqlite and not cfg.database_url and not (cfg.data_dir / "tidings.db").exists():
            raise _CliError(f"no database in {cfg.data_dir}")
        try:
            result = verify_chain(SqlAuditRepository(db).entries(), anchor_key=anchor)
        finally:
            db.dispose()
    except TidingsError as exc:
        _fail(exc, as_json)
        return
    except (SQLAlchemyError, ValueError, OSError) as exc:
        _fail(_CliError(f"cannot read the audit log ({type(exc).__name__})"), as_json)
        return
    data = {
        "ok": result.ok,
        "checked": result.checked,
        "anchored": anchor is not None,
        "head_seq": result.head.seq if result.head else 0,
        "head_hash": result.head.entry_hash.hex() if result.head else None,
        "first_bad_seq": result.first_bad_seq,
        "fault": result.fault.value if result.fault else None,
        "detail": result.detail or None,
    }
    if result.ok:
        head = ""
        if result.head:
            head = f", head seq {result.head.seq} {result.head.entry_hash.hex()[:16]}…"
        note = "" if anchor is not None else " (anchors not checked: no anchor key)"
        text = f"audit log intact: {result.checked} entries{head}{note}"
        _emit(as_json, data, text)
        return
    text = (
        f"audit log BROKEN at seq {result.first_bad_seq}: {data['fault']} — {result.detail} "
        f"({result.checked} entries verified before it)"
    )
    if as_json:
        typer.echo(json.dumps(data))
    else:
        typer.echo(text, err=True)
    raise typer.Exit(code=1)


@admin_cli.command("create-staff")
def admin_create_staff(
    username: Annotated[str, typer.Argument(help="Sign-in name (letters, digits, . _ -).")],
    role: Annotated[
        list[str], typer.Option("--role", help="reviewer, lead, legal or admin (repeatable).")
    ],
    child_safety: Annotated[
        bool, typer.Option("--child-safety", help="Request the child-safety clearance.")
    ] = False,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", help="Queue membership (repeatable).")
    ] = None,
    console_url: Annotated[
        str | None,
        typer.Option(help="The console's public URL (default http://<host>:<port>/console)."),
    ] = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a staff account and print its single-use enrolment link, for its owner: they set
    their password and enrol their authenticator themselves (no secret is ever printed). The
    roles and the clearance stay pending until an admin approves them in the console (audited
    as the command-line operator)."""
    from datetime import UTC, datetime

    from tidings.app import open_safety

    try:
        cfg = _server_config(config, data_dir, database_url)
        safety = open_safety(cfg)
        try:
            issued = safety.create_staff(
                safety.operator(),
                username=username,
                roles=role,
                child_safety=child_safety,
                queues=queue or (),
            )
        finally:
            safety.close()
    except TidingsError as exc:
        _fail(exc, as_json)
        return
    account = issued.account
    url = issued.url(console_url or f"http://{cfg.host}:{cfg.port}/console")
    expires = datetime.fromtimestamp(issued.expires_ms / 1000, UTC).isoformat(timespec="seconds")
    pending = [g.label for g in issued.pending_grants]
    data = {
        "id": account.staff_id,
        "username": account.username,
        "roles": sorted(r.value for r in account.roles),
        "pending_grants": pending,
        "enrolment_url": url,
        "expires_at": expires,
    }
    _emit(
        as_json,
        data,
        f"created {account.username}; pending approval by an admin: {', '.join(pending)}\n"
        f"  enrolment link (single use, until {expires}; give it to {account.username} only):\n"
        f"  {url}",
    )


@admin_cli.command("rotate-evidence-key")
def admin_rotate_evidence_key(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a fresh evidence key, make it active, and re-encrypt every stored evidence record
    under it (old keys stay in evidence.keys until you drop them). Restart running nodes (and
    run this again) so they seal new evidence under the new key."""
    from tidings.app import EVIDENCE_KEYS_FILE, open_safety
    from tidings.safety.keyfile import rotate_evidence_key

    try:
        cfg = _server_config(config, data_dir, database_url)
        key_id = rotate_evidence_key(cfg.data_dir / EVIDENCE_KEYS_FILE)
        safety = open_safety(cfg)
        try:
            safety.audit.append(
                actor="operator:cli",
                action="key.rotation",
                target=f"key:{key_id}",
                now_ms=safety.clock(),
                details={"kind": "evidence"},
            )
            done = safety.reencrypt_evidence(actor="operator:cli")
        finally:
            safety.close()
    except TidingsError as exc:
        _fail(exc, as_json)
        return
    _emit(
        as_json,
        {"active_key_id": key_id, "reencrypted": done},
        f"evidence key {key_id} is active; {done} record(s) re-encrypted",
    )


def main() -> None:
    cli()
