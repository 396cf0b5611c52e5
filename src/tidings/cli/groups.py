"""`tidings group ...`: create a group chat, change its members, leave it, send to it, list
the groups this device knows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

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
    progress_bar,
)

if TYPE_CHECKING:
    from tidings.client.sdk import Client, GroupSendResult

group_cli = typer.Typer(
    name="group",
    help="Group chats: create, change members, leave, send, list.",
    no_args_is_help=True,
)

GroupArg = Annotated[str, typer.Argument(help="Group id, unique id prefix or unique title.")]


def _emit_group(as_json: bool, verb: str, result: GroupSendResult) -> None:
    """Print a group change or send: the group, how many devices got it, who was missed."""
    line = f"{verb} {result.group.title} ({result.group.id}), {result.devices} device(s)"
    if result.failed:
        line += "; not reached: " + ", ".join(f"{a} ({c})" for a, c in result.failed.items())
    emit(as_json, result.to_dict(), line)


@group_cli.command("create")
@client_command
async def group_create(
    client: Client,
    name: Annotated[str, typer.Argument(help="The group's title.")],
    members: Annotated[
        list[str] | None, typer.Option("--member", "-m", help="A member account (repeat).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group with you and the --member accounts."""
    _emit_group(as_json, "created", await client.create_group(name, list(members or [])))


@group_cli.command("add")
@client_command
async def group_add(
    client: Client,
    group: GroupArg,
    users: Annotated[list[str], typer.Argument(help="Account(s) to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add members to a group (they see messages from now on only)."""
    _emit_group(as_json, "updated", await client.add_group_members(group, users))


@group_cli.command("remove")
@client_command
async def group_remove(
    client: Client,
    group: GroupArg,
    users: Annotated[list[str], typer.Argument(help="Account(s) to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove members from a group (keys rotate: they cannot read later messages)."""
    _emit_group(as_json, "updated", await client.remove_group_members(group, users))


@group_cli.command("leave")
@client_command
async def group_leave(client: Client, group: GroupArg, as_json: JsonOpt = False) -> None:
    """Leave a group (the history stays on this device)."""
    result = await client.leave_group(group)
    emit(as_json, result.to_dict(), f"left {result.group.title}")


@group_cli.command("send")
@client_command
async def group_send(
    client: Client,
    group: GroupArg,
    text: TextArg,
    as_json: JsonOpt = False,
) -> None:
    """Send a text message to every member of a group."""
    _emit_group(as_json, "sent to", await client.send_group_text(group, text))


@group_cli.command("send-file")
@client_command
async def group_send_file(
    client: Client,
    group: GroupArg,
    path: FileArg,
    caption: CaptionOpt = "",
    content_type: ContentTypeOpt = DEFAULT_CONTENT_TYPE,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt and send a file to a group."""
    with progress_bar(as_json, f"uploading {path.name}") as progress:
        result = await client.send_group_file(group, path, caption=caption,
                                              content_type=content_type, progress=progress)
    _emit_group(as_json, f"sent {path.name} to", result)


@group_cli.command("list")
@client_command
async def group_list(client: Client, as_json: JsonOpt = False) -> None:
    """List the groups this device knows."""
    groups = client.groups()
    lines = [f"{g.id}  {g.title}  ({', '.join(g.members)})" + ("" if g.active else "  [left]")
             for g in groups]
    emit(as_json, {"groups": [g.to_dict() for g in groups]}, "\n".join(lines) or "no groups")
