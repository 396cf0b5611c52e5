"""The client commands of `tidings`, driven with Typer's CliRunner against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tests.support.kt import wait_published_http
from tidings.cli import cli

runner = CliRunner()
ENV = {"TIDINGS_PASSPHRASE": "cli passphrase"}


def tidings(profile: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(cli, ["--profile", str(profile), *args], env=env or ENV)


def ok_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_conversation(tmp_path: Path, server_url: str, names: Callable[[str], str]) -> None:
    alice, bob = names("alice"), names("bob")
    pa, pb2, pb = tmp_path / "alice", tmp_path / "bob2", tmp_path / "bob"
    out = ok_json(tidings(pa, "register", alice, "--server", server_url, "--json"))
    assert out["username"] == alice and out["device_id"] >= 1
    ok_json(tidings(pb, "register", bob, "--server", server_url, "--json"))

    sent = ok_json(tidings(pa, "send", bob, "hello from the cli", "--json"))
    assert sent["devices"] == 1

    result = tidings(pb, "receive", "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [e["message"]["body"] for e in events if e["kind"] == "message"] == [
        "hello from the cli"
    ]

    # Human-readable output, polling mode.
    assert tidings(pb, "send", alice, "reply").exit_code == 0
    result = tidings(pa, "receive", "--poll")
    assert result.exit_code == 0 and f"{bob}.1: reply" in result.stdout

    doc = tmp_path / "doc.txt"
    doc.write_text("attached text")
    assert tidings(pa, "send-file", bob, str(doc), "--caption", "a file").exit_code == 0
    events = [json.loads(x) for x in tidings(pb, "receive", "--json").stdout.splitlines()]
    file_msg = next(e for e in events if e["kind"] == "message")
    assert file_msg["message"]["attachments"][0]["file_name"] == "doc.txt"
    message_id = file_msg["message"]["id"]
    saved = ok_json(tidings(pb, "download", message_id, str(tmp_path), "--json"))
    assert Path(saved["path"]).read_text() == "attached text"
    assert tidings(pb, "send", alice, "reply").exit_code == 0
    result = tidings(pa, "receive", "--poll")
    assert result.exit_code == 0 and f"{bob}.1: reply" in result.stdout

    history = ok_json(tidings(pa, "messages", bob, "--json"))["messages"]
    assert [m["body"] for m in history] == ["hello from the cli", "reply", "a file", "reply"]

    # Safety numbers and verification.
    numbers = ok_json(tidings(pa, "safety-number", bob, "--json"))
    number = numbers["devices"][0]["safety_number"]
    theirs = ok_json(tidings(pb, "safety-number", alice, "--json"))
    assert theirs["devices"][0]["safety_number"] == number
    bad = tidings(pa, "verify", bob, "--number", "1" * 60, "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"]["code"] == "safety_number_mismatch"
    verified = ok_json(tidings(pa, "verify", bob, "--number", number, "--json"))
    assert verified["verified"] is True

    # Linking a second device for Bob.
    code = ok_json(tidings(pb, "link-code", "--json"))["code"]
    linked = ok_json(tidings(pb2, "link", bob, "--code", code, "--server", server_url, "--json"))
    assert linked["device_id"] != 1
    devices = ok_json(tidings(pb, "devices", "--json"))["devices"]
    assert len(devices) == 2
    # Bob's first device vouches for it in the key directory (status runs self-monitoring).
    status = ok_json(tidings(pb, "status", "--json"))
    assert status["key_transparency"]["alerts"] == []
    assert status["key_transparency"]["device_list_version"] == 2
    wait_published_http(server_url, bob, 2)

    # Alice verified Bob: the new device blocks sending with an actionable one-line error.
    blocked = tidings(pa, "send", bob, "blocked?")
    assert blocked.exit_code == 1
    assert blocked.stderr.count("\n") == 1 and "tidings verify" in blocked.stderr
    assert "Traceback" not in blocked.output
    assert tidings(pa, "verify", bob).exit_code == 0
    assert ok_json(tidings(pa, "send", bob, "to both", "--json"))["devices"] == 2


def test_cli_errors_are_one_line(tmp_path: Path, server_url: str,
                                 names: Callable[[str], str]) -> None:
    profile = tmp_path / "p"
    # No profile yet.
    result = tidings(profile, "send", "someone", "hi")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no Tidings profile")
    assert "Traceback" not in result.output
    ok_json(tidings(profile, "register", names("carol"), "--server", server_url, "--json"))
    # Wrong passphrase.
    result = tidings(profile, "send", "someone", "hi", "--json",
                     env={"TIDINGS_PASSPHRASE": "nope"})
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "wrong_passphrase"
    # No passphrase and no terminal.
    result = runner.invoke(cli, ["--profile", str(profile), "receive"],
                           env={"TIDINGS_PASSPHRASE": ""})
    assert result.exit_code == 1 and "TIDINGS_PASSPHRASE" in result.stderr
    # Unknown recipient.
    result = tidings(profile, "send", names("nobody"), "hi", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "unknown_account"
    # Server unreachable.
    other = tmp_path / "q"
    result = tidings(other, "register", names("dave"), "--server", "http://127.0.0.1:9")
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot reach the server")
    assert not (other / "tidings.db").exists()


def test_version_still_works() -> None:
    result = runner.invoke(cli, ["version", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["version"]


def events_of(result: Any) -> list[Any]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.strip().splitlines() if line]


def test_cli_groups_and_reports(tmp_path: Path, server_url: str,
                                names: Callable[[str], str]) -> None:
    alice, bob, carol = names("alice"), names("bob"), names("carol")
    pa, pb, pc = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for profile, name in ((pa, alice), (pb, bob), (pc, carol)):
        ok_json(tidings(profile, "register", name, "--server", server_url, "--json"))

    created = ok_json(tidings(pa, "group", "create", "Hikers", "--member", bob,
                              "--member", carol, "--json"))
    group_id = created["group"]["id"]
    assert created["group"]["members"] == sorted([alice, bob, carol])
    assert ok_json(tidings(pa, "group", "send", "Hikers", "meet at 9", "--json"))["devices"] == 2
    got = events_of(tidings(pb, "receive", "--json"))
    assert [e["message"]["body"] for e in got if e["kind"] == "message"] == ["", "meet at 9"]
    listed = ok_json(tidings(pb, "group", "list", "--json"))["groups"]
    assert [g["id"] for g in listed] == [group_id]
    # Human output: one line per group, and group messages by id prefix.
    result = tidings(pb, "group", "list")
    assert result.exit_code == 0 and "Hikers" in result.stdout
    # "--": a base64url id prefix may start with "-", which would read as an option.
    result = tidings(pb, "group", "send", "--", group_id[:6], "ok!")
    assert result.exit_code == 0 and result.stdout.startswith("sent to Hikers")
    history = ok_json(tidings(pb, "messages", "Hikers", "--json"))["messages"]
    assert [m["body"] for m in history] == ["", "meet at 9", "ok!"]

    # Membership: remove Carol, who then cannot send; Bob leaves.
    assert tidings(pc, "receive").exit_code == 0
    removed = ok_json(tidings(pa, "group", "remove", "Hikers", carol, "--json"))
    assert carol not in removed["group"]["members"]
    assert tidings(pc, "receive").exit_code == 0
    refused = tidings(pc, "group", "send", "Hikers", "hello?", "--json")
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["error"]["code"] == "not_a_member"
    assert tidings(pb, "receive").exit_code == 0
    left = ok_json(tidings(pb, "group", "leave", "Hikers", "--json"))
    assert left["group"]["active"] is False
    again = tidings(pa, "group", "remove", "Hikers", names("nobody"))
    assert again.exit_code == 1 and again.stderr.count("\n") == 1
    unknown = tidings(pa, "group", "send", "No such group", "x", "--json")
    assert json.loads(unknown.stdout)["error"]["code"] == "unknown_group"

    # Reports: a bad category and an unknown message are one-line errors.
    got = events_of(tidings(pa, "receive", "--json"))
    message_id = next(e["message"]["id"] for e in got
                      if e["kind"] == "message" and e["message"]["body"] == "ok!")
    bad = tidings(pa, "report", message_id, "--reason", "rudeness", "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"]["code"] == "invalid_argument"
    missing = tidings(pa, "report", "i:nothing", "--reason", "spam")
    assert missing.exit_code == 1 and missing.stderr.startswith("error: only a message")
    result = tidings(pa, "report", message_id, "--reason", "spam", "--context", "2",
                     "--note", "unwanted", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    # The reported message plus one received message of the group as context (--context 2
    # allows up to two; alice's own sends are never items).
    assert answer["report_id"] and answer["case_id"] and answer["items"] == 2
    result = tidings(pa, "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "active"
    assert tidings(pa, "status").stdout.startswith("your account is in good standing")
    result = tidings(pa, "appeal", "no-such-decision", "please", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert json.loads(result.stdout)["error"]["code"] == "not_found"


def test_status_text_explains_enforcement_and_appeal() -> None:
    from tidings.cli import _status_text

    assert _status_text({"status": "active"}) == "your account is in good standing"
    text = _status_text({"status": "suspended", "until_ms": 1_700_000_000_000,
                         "policy": "harassment", "decision_id": "d1"})
    assert text.splitlines() == [
        "your account is suspended until 2023-11-14 22:13 UTC",
        "reason: harassment",
        'to appeal: tidings appeal d1 "why this is wrong"',
    ]
    text = _status_text({"status": "banned", "decision_id": "d1",
                         "appeal": {"state": "decided", "outcome": "upheld"}})
    assert text.splitlines()[-1] == "appeal: decided (upheld)"


def test_chat_command_is_listed() -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("chat", "group", "report", "status", "appeal"):
        assert command in result.stdout


def test_status_text_shows_lawful_request_notices() -> None:
    from tidings.cli import _status_text
    from tidings.client.tui import account_notice

    notice = {"request_id": "lr_1", "account": "alice", "due_ms": 1_700_000_000_000,
              "kind": "search_warrant", "agency": "Metropolitan Police", "country": "GB",
              "categories": ["subscriber", "devices"]}
    text = _status_text({"status": "active", "lawful_notices": [notice]})
    lines = text.splitlines()
    assert lines[0] == "your account is in good standing"
    assert lines[1] == ("ⓘ Metropolitan Police (GB) was given subscriber, devices about your "
                        "account under a search warrant (notice of 2023-11-14, request lr_1).")
    assert account_notice({"status": "active", "lawful_notices": [notice]}) == lines[1]
    banned = account_notice({"status": "banned", "lawful_notices": [notice]})
    assert banned.startswith("⚠ Your account is banned.") and banned.endswith("request lr_1).")
    assert account_notice({"status": "active"}) == ""


def test_cli_status_shows_alerts_and_remove_device_publishes(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    alice = names("alice")
    pa, pa2 = tmp_path / "alice", tmp_path / "alice2"
    ok_json(tidings(pa, "register", alice, "--server", server_url, "--json"))
    code = ok_json(tidings(pa, "link-code", "--json"))["code"]
    # Linked with the server's part of the code only: no binding, nobody vouches for it.
    bare = code.partition(".")[0]
    linked = ok_json(tidings(pa2, "link", alice, "--code", bare, "--server", server_url,
                             "--json"))
    text = tidings(pa, "status")
    assert text.exit_code == 0, text.output
    assert "Key transparency (kt_unvouched_device)" in text.stdout
    assert f"device {linked['device_id']}" in text.stdout
    status = ok_json(tidings(pa, "status", "--json"))
    assert [a["device_id"] for a in status["key_transparency"]["alerts"]] == [
        linked["device_id"]]
    removed = ok_json(tidings(pa, "remove-device", str(linked["device_id"]), "--json"))
    assert removed == {"removed": linked["device_id"], "device_list_version": 1}
    devices = ok_json(tidings(pa, "devices", "--json"))["devices"]
    assert [d["device_id"] for d in devices] == [1]
    # The alert stays on record, resolved now that the device is gone.
    [alert] = ok_json(tidings(pa, "status", "--json"))["key_transparency"]["alerts"]
    assert alert["device_id"] == linked["device_id"] and alert["resolved_at_ms"] > 0
    assert "resolved: the device was removed" in tidings(pa, "status").stdout
    # A malformed secret part of a code is refused before anything is created.
    bad = tidings(tmp_path / "alice3", "link", alice, "--code", bare + ".!!", "--server",
                  server_url, "--json")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["error"]["code"] == "malformed"
    assert not (tmp_path / "alice3" / "tidings.db").exists()



def test_cli_kt_witnesses_shows_and_sets_the_requirement(
    tmp_path: Path, server_url: str, names: Callable[[str], str]
) -> None:
    from tidings.crypto.primitives import ed25519_public
    from tidings.wire.base64url import b64e

    pa = tmp_path / "alice"
    ok_json(tidings(pa, "register", names("alice"), "--server", server_url, "--json"))
    assert ok_json(tidings(pa, "kt-witnesses", "--json")) == {"keys": [], "minimum": 0}
    keys = [b64e(ed25519_public(bytes([i]) * 32)) for i in (1, 2)]
    shown = ok_json(tidings(pa, "kt-witnesses", *keys, "--min", "1", "--json"))
    assert shown == {"keys": keys, "minimum": 1}
    assert "1 of 2 witnesses required" in tidings(pa, "kt-witnesses").stdout
    bad = tidings(pa, "kt-witnesses", keys[0], "--min", "2", "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"]["code"] == "invalid_kt_witness_policy"
    bad = tidings(pa, "kt-witnesses", "not-a-key", "--json")
    assert bad.exit_code == 1
    assert ok_json(tidings(pa, "kt-witnesses", "--json")) == {"keys": keys, "minimum": 1}
