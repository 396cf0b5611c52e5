"""The contract of `tidings.cli._common.client_command`, the one place a client command opens
its profile: the body gets the open Client of --profile, the Client is closed however the
body ends, and what the body raises becomes the one-line error (or --json error object) and
exit code 1 — without a server, with a stand-in for `Client.open`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from tidings.cli._common import JsonOpt, client_command
from tidings.client import sdk
from tidings.client.errors import UnknownGroupError


class FakeClient:
    def __init__(self, profile: Path, passphrase: str) -> None:
        self.profile, self.passphrase, self.closed = profile, passphrase, False

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[FakeClient]:
    clients: list[FakeClient] = []

    def fake_open(profile: Path, passphrase: str) -> FakeClient:
        clients.append(FakeClient(profile, passphrase))
        return clients[-1]

    monkeypatch.setattr(sdk.Client, "open", staticmethod(fake_open))
    return clients


app = typer.Typer()


@app.callback()
def root(ctx: typer.Context, profile: Annotated[Path, typer.Option("--profile")]) -> None:
    ctx.obj = {"profile": profile}


@app.command()
@client_command
async def echo(
    client: Any,
    what: Annotated[str, typer.Argument(help="ok, typed or bug")],
    as_json: JsonOpt = False,
) -> None:
    """Print the profile the Client was opened on, or fail."""
    if what == "typed":
        raise UnknownGroupError("no group by that name")
    if what == "bug":
        raise ZeroDivisionError
    typer.echo(json.dumps({"profile": str(client.profile)}) if as_json else str(client.profile))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["--profile", "/p", *args],
                              env={"TIDINGS_PASSPHRASE": "secret words"})


def test_the_body_gets_the_profile_client_and_it_is_closed(opened: list[FakeClient]) -> None:
    result = invoke("echo", "ok", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"profile": "/p"}
    [client] = opened
    assert client.passphrase == "secret words" and client.closed


def test_a_typed_error_is_one_line_and_the_client_is_closed(opened: list[FakeClient]) -> None:
    result = invoke("echo", "typed")
    assert result.exit_code == 1
    assert result.stderr == "error: no group by that name\n"
    assert json.loads(invoke("echo", "typed", "--json").stdout) == {
        "error": {"code": "unknown_group", "message": "no group by that name"}
    }
    assert [c.closed for c in opened] == [True, True]


def test_a_bug_names_its_kind_without_a_traceback(opened: list[FakeClient]) -> None:
    result = invoke("echo", "bug", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert json.loads(result.stdout)["error"] == {
        "code": "usage", "message": "unexpected internal error (ZeroDivisionError)"
    }
    assert opened[0].closed


def test_typer_sees_the_body_parameters_behind_the_context() -> None:
    result = CliRunner().invoke(app, ["--profile", "/p", "echo", "--help"])
    assert result.exit_code == 0
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert usage.split() == ["Usage:", "root", "echo", "[OPTIONS]", "{what}"]  # no client
    assert "--json" in result.stdout
