"""The trust & safety side through the real app (SQLite and PostgreSQL): messages franked by a
sender, tagged by the real server, fetched by the recipient and reported over
``POST /v1/reports``; every forgery refused with its code and nothing stored; a verified report
opening a case; a ban taking effect at once on the messaging API (403, WebSocket closed,
username reserved), visible in ``GET /v1/account/status`` and appealable; and
``tidings audit verify`` catching tampering in the real database."""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from tests.safety.conftest import altered_content
from tests.support.app import Net, make_config
from tests.support.devices import DeviceKit
from tests.support.services import PG_URL, pg_admin, require_service
from tidings.app import create_app
from tidings.cli import cli
from tidings.crypto import attachment
from tidings.crypto.franking import ReportItem
from tidings.safety.sql import SafetyDatabase
from tidings.safety.staff import Role
from tidings.server.config import ServerConfig
from tidings.storage.database import sqlite_url
from tidings.storage.safety_schema import account_enforcements
from tidings.wire.base64url import b64e

# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerConfig]:
    if request.param == "sqlite":
        yield make_config(tmp_path / "data")
        return
    schema = f"tidings_http_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    yield make_config(tmp_path / "data", database_url=PG_URL, database_schema=schema)
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def net(config: ServerConfig) -> Iterator[Net]:
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        yield Net(client, config)


# --- reports --------------------------------------------------------------------------------


def test_a_verified_report_is_stored_and_opens_a_case(net: Net) -> None:
    alice, bob = net.register("alice"), net.register("bob")
    items = [net.send(alice, bob, f"message {i}") for i in range(3)]
    before = net.counts()
    r = net.report(bob, items)
    assert r.status_code == 201, r.text
    body = r.json()
    after = net.counts()
    assert after["safety_reports"] == before["safety_reports"] + 1
    assert after["safety_cases"] == before["safety_cases"] + 1
    assert after["safety_evidence"] == before["safety_evidence"] + 2  # messages + comment
    report = net.safety.report_repo.get_report(body["report_id"])
    assert report is not None and report.case_id == body["case_id"]
    assert report.subject == alice.username and report.reporter == bob.username
    case = net.safety.case_repo.get_case(body["case_id"])
    assert case is not None and case.queue_id == "harassment"
    flags = [
        (i.franking_verified, i.chain_verified)
        for i in net.safety.report_repo.items_for_report(body["report_id"])
    ]
    assert flags == [(True, True)] * 3
    # Evidence is stored encrypted: no message text in the database.
    if not net.config.database_url:
        raw = (net.config.data_dir / "tidings.db").read_bytes()
        assert b"message 1" not in raw and b"they keep doing this" not in raw


Forgery = Callable[
    [Net, DeviceKit, DeviceKit, DeviceKit], tuple[DeviceKit, list[ReportItem], list[dict[str, Any]]]
]


def _altered_text(net: Net, alice: DeviceKit, bob: DeviceKit, carol: DeviceKit) -> Any:
    item = net.send(alice, bob, "I never said this")
    return (
        bob,
        [item.__class__(**{**_fields(item), "content": altered_content(item, "I said this")})],
        [],
    )


def _swapped_franking_key(net: Net, alice: DeviceKit, bob: DeviceKit, carol: DeviceKit) -> Any:
    item = net.send(alice, bob, "hello")
    return bob, [item.__class__(**{**_fields(item), "franking_key": os.urandom(32)})], []


def _tag_from_another_message(net: Net, alice: DeviceKit, bob: DeviceKit, carol: DeviceKit) -> Any:
    first, second = net.send(alice, bob, "one"), net.send(alice, bob, "two")
    return bob, [second.__class__(**{**_fields(second), "franking_tag": first.franking_tag})], []


def _reporter_not_recipient(net: Net, alice: DeviceKit, bob: DeviceKit, carol: DeviceKit) -> Any:
    return carol, [net.send(alice, bob, "for bob only")], []


def _context_from_another_conversation(
    net: Net, alice: DeviceKit, bob: DeviceKit, carol: DeviceKit
) -> Any:
    # Bob got a message from Alice in their chat, and one from Carol in another chat; he
    # presents Carol's message as context of Alice's.
    other = net.send(carol, bob, "an unrelated chat")
    reported = net.send(alice, bob, "the reported message")
    return bob, [other, reported], []


def _attachment_key_swap(net: Net, alice: DeviceKit, bob: DeviceKit, carol: DeviceKit) -> Any:
    pointer = net.upload(alice, b"\x89PNG fake image bytes" * 20)
    item = net.send(alice, bob, "look", attachments=(pointer,))
    return bob, [item], [{"item": 0, "pointer": 0, "key": b64e(attachment.generate_key())}]


def _fields(item: ReportItem) -> dict[str, Any]:
    return {
        "content": item.content,
        "franking_key": item.franking_key,
        "commitment": item.commitment,
        "franking_tag": item.franking_tag,
        "sender": item.sender,
        "sender_device": item.sender_device,
        "recipient": item.recipient,
        "recipient_device": item.recipient_device,
        "server_timestamp_ms": item.server_timestamp_ms,
        "message_id": item.message_id,
    }


FORGERIES: list[tuple[str, Any, str]] = [
    ("altered_text", _altered_text, "commitment_mismatch"),
    ("swapped_franking_key", _swapped_franking_key, "commitment_mismatch"),
    ("tag_from_another_message", _tag_from_another_message, "invalid_franking_tag"),
    ("reporter_not_recipient", _reporter_not_recipient, "reporter_not_recipient"),
    (
        "context_from_another_conversation",
        _context_from_another_conversation,
        "broken_context_chain",
    ),
    ("attachment_key_swap", _attachment_key_swap, "attachment_key_mismatch"),
]


@pytest.mark.parametrize(("name", "forge", "code"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_every_forgery_is_refused_with_its_code_and_nothing_is_stored(
    net: Net, name: str, forge: Any, code: str
) -> None:
    alice, bob, carol = net.register("alice"), net.register("bob"), net.register("carol")
    reporter, items, reveals = forge(net, alice, bob, carol)
    before = net.counts()
    refusals = net.safety.repos.refusals
    r = net.report(reporter, items, attachments=reveals)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert net.counts() == before
    # Counted, durably, under its code on the day: the count only, nothing of the report.
    assert refusals.count_refused(0, 2**62) == {(code,): 1}


def test_a_replayed_report_is_refused_and_stores_nothing(net: Net) -> None:
    alice, bob = net.register("alice"), net.register("bob")
    items = [net.send(alice, bob, "once")]
    assert net.report(bob, items).status_code == 201
    before = net.counts()
    r = net.report(bob, items)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "report_replayed")
    r = net.report(bob, items, category="spam")  # same message, another report
    assert (r.status_code, r.json()["error"]["code"]) == (400, "message_already_reported")
    assert net.counts() == before


def test_a_verified_attachment_is_accepted(net: Net) -> None:
    alice, bob = net.register("alice"), net.register("bob")
    pointer = net.upload(alice, b"\x89PNG real image bytes" * 20)
    item = net.send(alice, bob, "look", attachments=(pointer,))
    r = net.report(bob, [item], attachments=[{"item": 0, "pointer": 0, "key": b64e(pointer.key)}])
    assert r.status_code == 201, r.text
    kinds = {e.kind for e in net.safety.evidence_repo.evidence_for_report(r.json()["report_id"])}
    assert "attachment:0:0" in kinds


def test_malformed_report_bodies_are_400(net: Net) -> None:
    bob = net.register("bob")
    r = net.client.post(
        "/v1/reports",
        json={"category": "spam", "items": ["!!"], "reported_index": 0},
        headers=bob.auth,
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed")
    assert net.client.post("/v1/reports", json={}).status_code == 401


# --- enforcement ----------------------------------------------------------------------------


def _decide(net: Net, subject_case: str, kind: str, until_ms: int | None = None) -> str:
    """Reviewer decides (a BAN is then confirmed by a lead); returns the decision id."""
    rev = net.staff(f"rev{secrets.token_hex(3)}", Role.REVIEWER, ("harassment",))
    lead = net.staff(f"lead{secrets.token_hex(3)}", Role.LEAD, ("harassment",))
    s = net.safety
    s.claim(rev, subject_case)
    outcome = s.decide(
        rev, subject_case, kind=kind, policy_id="HAR-1", reason="repeated abuse", until_ms=until_ms
    )
    if kind == "ban":
        assert not outcome.enforcements  # a proposal until a second reviewer confirms
        s.claim(lead, subject_case)
        outcome = s.confirm(lead, subject_case, reason="agreed")
    assert outcome.enforcements
    return outcome.decision.decision_id


def _reported_case(net: Net) -> tuple[DeviceKit, DeviceKit, str]:
    alice, bob = net.register("alice"), net.register("bob")
    r = net.report(bob, [net.send(alice, bob, "abuse")])
    assert r.status_code == 201, r.text
    return alice, bob, r.json()["case_id"]


def test_a_ban_takes_effect_at_once_and_can_be_appealed(net: Net) -> None:
    alice, bob, case_id = _reported_case(net)
    status = net.client.get("/v1/account/status", headers=alice.auth).json()
    assert status == {"status": "active"}
    with net.client.websocket_connect("/v1/websocket", headers=alice.auth) as ws:
        assert ws.receive_json() == {"type": "queue_empty"}
        decision_id = _decide(net, case_id, "ban")
        # The enforcement callback wakes Alice's socket: it re-checks and closes.
        frame = ws.receive_json()
        assert frame["type"] == "error" and frame["code"] == "account_banned"
    r = net.client.get("/v1/devices", headers=alice.auth)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "account_banned")
    r = net.client.put(f"/v1/messages/{bob.username}", json={"messages": []}, headers=alice.auth)
    assert r.status_code == 403
    # Others are unaffected.
    assert net.client.get("/v1/devices", headers=bob.auth).status_code == 200
    status = net.client.get("/v1/account/status", headers=alice.auth).json()
    assert status["status"] == "banned" and status["decision_id"] == decision_id
    assert status["policy"] == "HAR-1" and "appeal" not in status
    assert "repeated abuse" not in str(status)  # the reviewer's reasoning stays internal
    r = net.client.post(
        "/v1/appeals", json={"decision_id": decision_id, "text": "not me"}, headers=alice.auth
    )
    assert r.status_code == 201, r.text
    status = net.client.get("/v1/account/status", headers=alice.auth).json()
    assert status["appeal"] == {"state": "open"}
    r = net.client.post(
        "/v1/appeals", json={"decision_id": decision_id, "text": "again"}, headers=alice.auth
    )
    assert r.status_code >= 400
    r = net.client.post(
        "/v1/appeals", json={"decision_id": decision_id, "text": "me too"}, headers=bob.auth
    )
    assert r.status_code == 403
    # The banned name stays reserved even once the account is gone.
    state = net.client.app.state.tidings  # type: ignore[attr-defined]
    account_id = net.client.portal.call(state.store.account_id, alice.username)  # type: ignore[union-attr]
    net.client.portal.call(state.store.delete_account, account_id)  # type: ignore[union-attr]
    r = net.client.post(
        "/v1/accounts", json={"username": alice.username, "device": DeviceKit().device_keys()}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (409, "username_taken")


def test_suspension_and_restriction(net: Net) -> None:
    alice, bob, case_id = _reported_case(net)
    _decide(net, case_id, "restrict")
    r = net.client.get(f"/v1/keys/{bob.username}", headers=alice.auth)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "account_restricted")
    assert net.client.get(f"/v1/keys/{alice.username}", headers=alice.auth).status_code == 200
    assert net.client.get("/v1/devices", headers=alice.auth).status_code == 200
    assert net.client.get("/v1/account/status", headers=alice.auth).json()["status"] == (
        "restricted"
    )
    carol, dave = net.register("carol"), net.register("dave")
    r = net.report(dave, [net.send(carol, dave, "abuse")])
    until = net.safety.clock() + 3_600_000
    _decide(net, r.json()["case_id"], "suspend", until_ms=until)
    r = net.client.get("/v1/devices", headers=carol.auth)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "account_suspended")
    status = net.client.get("/v1/account/status", headers=carol.auth).json()
    assert status["status"] == "suspended" and status["until_ms"] == until
    with (
        pytest.raises(WebSocketDisconnect),
        net.client.websocket_connect("/v1/websocket", headers=carol.auth) as ws,
    ):
        ws.receive_json()  # the upgrade is refused (HTTP 403)


def test_an_overturned_appeal_lifts_the_ban(net: Net) -> None:
    alice, _, case_id = _reported_case(net)
    decision_id = _decide(net, case_id, "ban")
    appeal = net.client.post(
        "/v1/appeals", json={"decision_id": decision_id, "text": "not me"}, headers=alice.auth
    ).json()["appeal_id"]
    judge = net.staff("judge", Role.LEAD, ("harassment",))
    net.safety.claim(judge, case_id)
    net.safety.decide_appeal(judge, appeal, overturn=True, reason="mistaken identity")
    assert net.client.get("/v1/devices", headers=alice.auth).status_code == 200
    status = net.client.get("/v1/account/status", headers=alice.auth).json()
    assert status["status"] == "active"
    assert status["appeal"] == {"state": "decided", "outcome": "overturned"}
    db = SafetyDatabase(
        net.config.database_url or sqlite_url(net.config.data_dir),
        schema=net.config.database_schema,
    )
    with db.read() as c:
        revoked = c.execute(select(account_enforcements.c.revoked_ms)).scalars().all()
    db.dispose()
    assert revoked and all(r is not None for r in revoked)


# --- audit verify on the real database ------------------------------------------------------


@pytest.fixture
def audited_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    runner = CliRunner()
    for name in ("rita", "remy", "rosa"):
        result = runner.invoke(
            cli, ["admin", "create-staff", name, "--role", "reviewer", "--data-dir", str(data)]
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["audit", "verify", "--data-dir", str(data)])
    assert result.exit_code == 0 and "intact: 9 entries" in result.output, result.output
    return data


def _tamper(data: Path, sql: str) -> None:
    with sqlite3.connect(data / "tidings.db") as db:
        db.executescript(sql)


@pytest.mark.parametrize(
    ("sql", "seq", "fault"),
    [
        ("UPDATE safety_audit_log SET actor = 'someone' WHERE seq = 2", 2, "edited"),
        ("DELETE FROM safety_audit_log WHERE seq = 2", 2, "removed"),
        # Rows are read in seq order, so swapping two rows' seq values shows up as the first
        # swapped entry no longer matching its hash.
        (
            "UPDATE safety_audit_log SET seq = -1 WHERE seq = 1; "
            "UPDATE safety_audit_log SET seq = 1 WHERE seq = 2; "
            "UPDATE safety_audit_log SET seq = 2 WHERE seq = -1;",
            1,
            "edited",
        ),
    ],
    ids=["edited", "removed", "reordered"],
)
def test_audit_verify_finds_tampering_in_the_database(
    audited_dir: Path, sql: str, seq: int, fault: str
) -> None:
    _tamper(audited_dir, sql)
    result = CliRunner().invoke(cli, ["audit", "verify", "--data-dir", str(audited_dir), "--json"])
    assert result.exit_code == 1, result.output
    assert f'"first_bad_seq": {seq}' in result.output and f'"fault": "{fault}"' in result.output
    text = CliRunner().invoke(cli, ["audit", "verify", "--data-dir", str(audited_dir)])
    assert text.exit_code == 1 and f"seq {seq}" in text.output


def test_first_start_writes_the_admin_credentials_to_a_private_file_never_to_output(
    tmp_path: Path,
) -> None:
    from tidings.cli import _first_admin

    config = make_config(tmp_path / "data")
    app = create_app(config)
    printed: list[str] = []
    import typer

    original = typer.echo
    typer.echo = lambda message="", **_: printed.append(str(message))  # type: ignore[assignment]
    try:
        _first_admin(app.state.safety, "http://127.0.0.1:8080/console", config.data_dir)
        _first_admin(app.state.safety, "http://127.0.0.1:8080/console", config.data_dir)
        account = app.state.safety.staff_repo.get_staff_by_username("admin")
    finally:
        typer.echo = original
        app.state.safety.close()
    path = config.data_dir / "first-admin.txt"
    assert len(printed) == 1 and str(path.resolve()) in printed[0] and "/console" in printed[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    body = path.read_text()
    assert "username:    admin" in body and account.totp_secret in body
    password = next(line.split()[-1] for line in body.splitlines() if line.startswith("password"))
    # Neither the password nor the TOTP secret reaches stdout/stderr (service logs).
    assert password not in printed[0] and account.totp_secret not in printed[0]
    assert "password:" not in printed[0] and "otpauth" not in printed[0]
