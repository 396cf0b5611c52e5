"""The client commands of `tidings`: devices, one-to-one messages and files, safety numbers,
reports, account status and appeals, and the terminal chat.

Each is an async body under `client_command` (or `profile_command` for the two that create a
profile), which opens the profile, maps errors to one line and closes the Client."""

from __future__ import annotations

import json
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidings.cli._common import (
    DEFAULT_CONTENT_TYPE,
    CaptionOpt,
    ContentTypeOpt,
    FileArg,
    JsonOpt,
    TextArg,
    client_command,
    emit,
    passphrase,
    profile_command,
    progress_bar,
)

if TYPE_CHECKING:
    from tidings.client.sdk import Client, ReceiveEvent

client_cli = typer.Typer()

RecipientArg = Annotated[str, typer.Argument(help="Recipient account.")]
MessageIdArg = Annotated[str, typer.Argument(help="Message id (from `messages --json`).")]
ServerOpt = Annotated[str, typer.Option("--server", help="Server base URL.")]
DeviceNameOpt = Annotated[str, typer.Option(help="A name for this device.")]


async def _announce_device(client: Client, profile: Path, as_json: bool, template: str) -> None:
    """Print the account and device a new profile holds (``template`` names the fields of
    the JSON object), then close the Client."""
    async with client:
        a = client.account
        data = {"username": a.username, "device_id": a.device_id, "server": a.server_url,
                "profile": str(profile)}
        emit(as_json, data, template.format(**data))


@client_cli.command()
@profile_command
async def register(
    profile: Path,
    username: Annotated[str, typer.Argument(help="The account name to create.")],
    server_url: ServerOpt,
    device_name: DeviceNameOpt = "primary",
    as_json: JsonOpt = False,
) -> None:
    """Create an account and this device's keys (profile encrypted with your passphrase)."""
    from tidings.client.sdk import Client

    client = await Client.register(profile, passphrase(confirm=True), username, server_url,
                                   device_name=device_name)
    await _announce_device(client, profile, as_json,
                           "registered {username} (device {device_id}) on {server}; "
                           "profile in {profile}")


@client_cli.command("link-code")
@client_command
async def link_code(client: Client, as_json: JsonOpt = False) -> None:
    """On an existing device: make a one-time code to link a new device (valid 10 minutes)."""
    code, expires = await client.create_link_code()
    emit(as_json, {"code": code, "expires_at_ms": expires, "username": client.account.username},
         f"link code: {code} (on the new device: tidings --profile DIR link "
         f"{client.account.username} --code {code} --server {client.account.server_url})")


@client_cli.command()
@profile_command
async def link(
    profile: Path,
    username: Annotated[str, typer.Argument(help="The existing account to join.")],
    code: Annotated[str, typer.Option("--code", help="Code from `tidings link-code`.")],
    server_url: ServerOpt,
    device_name: DeviceNameOpt = "linked",
    as_json: JsonOpt = False,
) -> None:
    """Make this profile a new device of an existing account."""
    from tidings.client.sdk import Client

    client = await Client.link(profile, passphrase(confirm=True), username, code, server_url,
                               device_name=device_name)
    await _announce_device(client, profile, as_json, "linked as {username} device {device_id}")


@client_cli.command()
@client_command
async def send(
    client: Client,
    username: RecipientArg,
    text: TextArg,
    as_json: JsonOpt = False,
) -> None:
    """Send a text message to every device of USERNAME (and a copy to your other devices)."""
    sent = await client.send_text(username, text)
    line = f"sent to {username} ({sent.devices} device(s))"
    if sent.synced_devices:
        line += f", synced to {sent.synced_devices} own device(s)"
    if sent.sync_error:
        line += f"; copy to own devices failed ({sent.sync_error})"
    emit(as_json, sent.to_dict(), line)


@client_cli.command("send-file")
@client_command
async def send_file(
    client: Client,
    username: RecipientArg,
    path: FileArg,
    caption: CaptionOpt = "",
    content_type: ContentTypeOpt = DEFAULT_CONTENT_TYPE,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt and send a file (the server stores only ciphertext)."""
    with progress_bar(as_json, f"uploading {path.name}") as progress:
        sent = await client.send_file(username, path, caption=caption,
                                      content_type=content_type, progress=progress)
    emit(as_json, sent.to_dict(), f"sent {path.name} to {username} ({sent.devices} device(s))")


@client_cli.command()
@client_command
async def download(
    client: Client,
    message_id: MessageIdArg,
    destination: Annotated[Path, typer.Argument(help="File or directory to write.")],
    index: Annotated[int, typer.Option(help="Which attachment of the message.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify and decrypt an attachment of a received message."""
    with progress_bar(as_json, "downloading") as progress:
        written = await client.download_attachment(message_id, destination, index=index,
                                                   progress=progress)
    emit(as_json, {"path": str(written)}, f"saved {written}")


def _event_line(ev: ReceiveEvent) -> str:
    who = f"{ev.sender}.{ev.sender_device}"
    warn = f"warning: the safety number with {ev.sender} changed\n" if ev.identity_changed else ""
    if ev.message is not None and ev.message.group_id is not None:
        where = f"[group {ev.message.group_id}]"
        text = ev.message.body or ev.message.notice
        if ev.message.body and ev.message.notice:
            text = f"{ev.message.notice}: {ev.message.body}"
        files = "".join(f" [file {a.file_name}, {a.size} bytes; message {ev.message.id}]"
                        for a in ev.message.attachments)
        return f"{warn}{where} {who}: {text}{files}"
    if ev.kind == "message" and ev.message is not None:
        files = "".join(f" [file {a.file_name}, {a.size} bytes; message {ev.message.id}]"
                        for a in ev.message.attachments)
        return f"{warn}{who}: {ev.message.body}{files}"
    if ev.kind == "sync" and ev.message is not None:
        return f"(sent from device {ev.sender_device}) to {ev.message.peer}: {ev.message.body}"
    if ev.kind == "receipt":
        return f"{warn}{ev.sender}: {ev.code}"
    if ev.kind == "rejected":
        return f"refused a message from {who} ({ev.code})"
    return f"{ev.kind} from {who}"


@client_cli.command()
@client_command
async def receive(
    client: Client,
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

    def show(ev: ReceiveEvent) -> None:
        # Printed as it arrives (not after the backlog), flushed before the SDK marks it
        # delivered: a run that dies later has already shown it.
        if ev.kind not in ("duplicate", "ignored", "key"):
            emit(as_json, ev.to_dict(), _event_line(ev))
            sys.stdout.flush()

    if poll and not follow:
        await client.poll(on_event=show)
        return
    await client.listen(follow=follow, on_event=show)


@client_cli.command()
@client_command
async def messages(
    client: Client,
    username: Annotated[
        str | None, typer.Argument(help="Only this conversation (an account or a group).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the local message history."""
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


@client_cli.command("safety-number")
@client_command
async def safety_number(
    client: Client,
    username: Annotated[str, typer.Argument(help="The contact.")],
    as_json: JsonOpt = False,
) -> None:
    """Show the safety numbers with USERNAME's devices, to compare out of band."""
    safety = await client.safety_numbers(username)
    lines = [f"{username} device {d.device_id}: {d.safety_number}"
             + (" (verified)" if d.verified else "") for d in safety.devices]
    if safety.blocked:
        lines.append(f"warning: {username}'s keys changed since you verified them; "
                     f"compare again, then run `tidings verify {username}`")
    elif safety.events:
        lines.append(f"note: {username}'s devices changed "
                     f"({', '.join(e.kind for e in safety.events)})")
    emit(as_json, safety.to_dict(), "\n".join(lines) or f"{username} has no devices")


@client_cli.command()
@client_command
async def verify(
    client: Client,
    username: Annotated[str, typer.Argument(help="The contact you compared numbers with.")],
    number: Annotated[
        str | None, typer.Option("--number", help="The safety number you were shown.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark USERNAME verified (after comparing safety numbers); --number checks it first."""
    safety = await client.verify(username, number)
    emit(as_json, safety.to_dict(), f"{username} verified ({len(safety.devices)} device(s))")


@client_cli.command()
@client_command
async def devices(client: Client, as_json: JsonOpt = False) -> None:
    """List this account's devices."""
    listed = await client.devices()
    me = client.account.device_id
    lines = [f"device {d.get('device_id')}: {d.get('name', '')}"
             + (" (this device)" if d.get("device_id") == me else "") for d in listed]
    emit(as_json, {"devices": listed}, "\n".join(lines))


@client_cli.command("remove-device")
@client_command
async def remove_device(
    client: Client,
    device_id: Annotated[int, typer.Argument(help="The device (from `tidings devices`).")],
    as_json: JsonOpt = False,
) -> None:
    """Remove one of this account's devices and publish the account's signed device list
    without it (key transparency)."""
    await client.remove_device(device_id)
    status = client.kt_status()
    emit(as_json, {"removed": device_id, "device_list_version": status["device_list_version"]},
         f"device {device_id} removed; device list version {status['device_list_version']}")


@client_cli.command("kt-witnesses")
@client_command
async def kt_witnesses(
    client: Client,
    keys: Annotated[
        list[str] | None,
        typer.Argument(help="Witness public keys (base64url Ed25519) to trust; none: show."),
    ] = None,
    minimum: Annotated[
        int | None,
        typer.Option("--min", help="How many of them must co-sign every head (0: none)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show, or set, the key-directory witnesses this device requires: a head without
    co-signatures of --min of them is refused (what needed it waits for the witnesses)."""
    from tidings.wire.base64url import b64d as decode

    if keys or minimum is not None:
        parsed = [decode(k, what="witness key", max_len=32) for k in keys or []]
        client.set_kt_witnesses(parsed, len(parsed) if minimum is None else minimum)
    status = client.kt_status()["witnesses"]
    emit(as_json, status, f"{status['minimum']} of {len(status['keys'])} witnesses required"
         + "".join(f"\n  {k}" for k in status["keys"]))


# --- reports, account status, appeals -----------------------------------------------------------


@client_cli.command()
@client_command
async def report(
    client: Client,
    message_id: MessageIdArg,
    reason: Annotated[
        str,
        typer.Option("--reason", help="child_sexual_exploitation, violent_threat, terrorism, "
                     "harassment, self_harm, spam, fraud or other."),
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
    answer = await client.report(message_id, reason, context=context, note=note, block=block)
    emit(as_json, answer,
         f"reported ({answer['items']} message(s) sent); report "
         f"{answer.get('report_id')}, case {answer.get('case_id')}"
         + ("; sender blocked" if block else ""))


@client_cli.command()
@client_command
async def status(client: Client, as_json: JsonOpt = False) -> None:
    """Show whether the provider took action on your account, and how to appeal."""
    state = await client.account_status()
    state["detection"] = client.detection_status()
    from tidings.errors import TidingsError

    try:
        # Self-monitoring in the key directory; a failure is one of the alerts shown.
        state["key_transparency"] = await client.kt_sync()
    except TidingsError:
        state["key_transparency"] = client.kt_status()
    emit(as_json, state, _status_text(state))


@client_cli.command("detection-sync")
@client_command
async def detection_sync(client: Client, as_json: JsonOpt = False) -> None:
    """Fetch the server's detection list if it changed, after checking its signature (under
    the key pinned the first time) and digest; then post any vouchers still waiting. Sending
    an image does this by itself when the last check is older than six hours."""
    detection = await client.sync_detection_list()
    emit(as_json, detection, _detection_text(detection))


def _status_text(state: dict[str, Any]) -> str:
    kind = str(state.get("status", "unknown"))
    detection = state.get("detection")
    from tidings.client.tui import key_transparency_lines, lawful_notice_lines

    notices = lawful_notice_lines(state) + key_transparency_lines(state)
    if kind == "active":
        lines = ["your account is in good standing", *notices]
        if isinstance(detection, dict):
            lines.append(_detection_text(detection))
        return "\n".join(lines)
    lines = [f"your account is {kind}"
             + (f" until {_when(state['until_ms'])}" if state.get("until_ms") else "")]
    if state.get("policy") or state.get("reason"):
        lines.append(f"reason: {state.get('policy') or ''} {state.get('reason') or ''}".strip())
    appeal_state = state.get("appeal")
    if isinstance(appeal_state, dict):
        outcome = appeal_state.get("outcome")
        lines.append(f"appeal: {appeal_state.get('state')}"
                     + (f" ({outcome})" if outcome else ""))
    elif state.get("decision_id"):
        lines.append(f"to appeal: tidings appeal {state['decision_id']} \"why this is wrong\"")
    lines.extend(notices)
    if isinstance(detection, dict):
        lines.append(_detection_text(detection))
    return "\n".join(lines)


def _detection_text(detection: dict[str, Any]) -> str:
    listed = detection.get("list")
    if not isinstance(listed, dict):
        text = ("detection: no list published by the server"
                if detection.get("server_publishes") is False else "detection: no list yet")
    else:
        text = (f"detection: list version {listed['version']} (digest {listed['digest'][:16]}…, "
                f"threshold {listed['threshold']}), checked {_when(detection.get('checked_ms'))}")
    if detection.get("pending_vouchers"):
        text += f"; {detection['pending_vouchers']} voucher(s) waiting to be posted"
    refused = detection.get("refused")
    if isinstance(refused, dict):
        text += f"\ndetection list REFUSED: {refused.get('message')}"
    return text


def _when(ms: object) -> str:
    import datetime

    if not isinstance(ms, int):
        return str(ms)
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M UTC")


@client_cli.command()
@client_command
async def appeal(
    client: Client,
    decision_id: Annotated[str, typer.Argument(help="The decision (from `tidings status`).")],
    text: Annotated[str, typer.Argument(help="Why the decision is wrong.")],
    as_json: JsonOpt = False,
) -> None:
    """Appeal a decision the provider took on your account."""
    answer = await client.appeal(decision_id, text)
    emit(as_json, answer, f"appeal {answer.get('appeal_id')} submitted")


@client_cli.command()
@client_command
async def chat(client: Client) -> None:
    """Open the interactive chat (terminal UI): conversations, messages, groups, files."""
    from tidings.client.tui import ChatApp

    await ChatApp(client).run_async()
