"""Every `tidings ...` command the documentation shows (README.md, docs/*.md: code blocks and
inline code) is a command `tidings --help` lists, and answers `--help` under that name: a
renamed or dropped command cannot leave the docs pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from tidings.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```.*?```", re.S)
SPAN = re.compile(r"`([^`\n]+)`")
# `tidings [--profile DIR] COMMAND [SUBCOMMAND-or-argument]`, also as `.venv/bin/tidings`.
COMMAND = re.compile(
    r"(?:^|[\s(])(?:\S*/)?tidings(?:\s+--profile\s+\S+)?\s+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?",
    re.M,
)


def documented_commands() -> set[tuple[str, ...]]:
    """The command paths the docs show: ("send",), ("audit", "verify"), ... The second word
    is kept as written; whether it is a subcommand is decided against the command tree."""
    found: set[tuple[str, ...]] = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        code = [m.group(0) for m in FENCE.finditer(text)]
        code += [m.group(1) for m in SPAN.finditer(FENCE.sub("", text))]
        for snippet in code:
            found |= {tuple(w for w in m.groups() if w) for m in COMMAND.finditer(snippet)}
    return found


def _subcommands(command: Any) -> list[str]:
    if not hasattr(command, "list_commands"):
        return []
    ctx = typer.Context(command)
    return [n for n in command.list_commands(ctx) if not command.get_command(ctx, n).hidden]


def test_the_docs_show_commands() -> None:
    # The scan itself works: these are shown in README.md's quick start and operator notes.
    shown = documented_commands()
    assert {("send", "bob"), ("receive",), ("server",), ("audit", "verify")} <= shown
    assert ("admin", "create-staff") in shown


def test_every_documented_command_exists() -> None:
    root: Any = typer.main.get_command(cli)
    listed = _subcommands(root)
    runner = CliRunner()
    missing: list[str] = []
    for first, *rest in sorted(documented_commands()):
        if first not in listed:
            missing.append(f"tidings {first}: not in `tidings --help`")
            continue
        group = root.get_command(typer.Context(root), first)
        # For a command group the next word names a subcommand; otherwise it is an argument.
        path = [first, *rest[:1]] if _subcommands(group) else [first]
        if len(path) == 2 and path[1] not in _subcommands(group):
            missing.append(f"tidings {' '.join(path)}: not in `tidings {first} --help`")
            continue
        result = runner.invoke(cli, [*path, "--help"])
        if result.exit_code != 0 or f"tidings {' '.join(path)}" not in result.stdout:
            missing.append(f"tidings {' '.join(path)} --help: exit {result.exit_code}")
    assert missing == []
