"""Preservation holds through the real app (SQLite and PostgreSQL): a hold freezes the
account's records, keeps its attachments past their expiry and past the account's deletion,
is extended and released by legal only (each step audited, refusals change nothing), and once
it ends the next purge deletes what it alone kept."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.app import Net, make_config
from tests.support.services import PG_URL, pg_admin, require_service
from tests.support.staff import active_staff
from tidings.app import create_app, purge_round
from tidings.clock import DAY_MS
from tidings.errors import NotFoundError, PermissionDeniedError, SafetyInputError
from tidings.safety.audit import AuditAction
from tidings.safety.holds import HoldKind
from tidings.safety.staff import Principal, Role
from tidings.server.config import ServerConfig


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerConfig]:
    base: dict[str, Any] = {"attachment_ttl_s": 1}
    if request.param == "sqlite":
        yield make_config(tmp_path / "data", **base)
        return
    schema = f"tidings_hold_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    yield make_config(tmp_path / "data", database_url=PG_URL, database_schema=schema, **base)
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def world(config: ServerConfig) -> Iterator[Net]:
    with TestClient(create_app(config), raise_server_exceptions=True) as client:
        yield Net(client, config)


def _principal(net: Net, name: str, roles: set[Role]) -> Principal:
    account = active_staff(net.safety, name, roles)
    return net.safety.staff.principal_for(account.staff_id)


def _stored(net: Net, attachment_id: str) -> bool:
    app = net.client.app
    return app.state.tidings.attachments.read(attachment_id) is not None  # type: ignore[attr-defined]


def _purge(net: Net) -> None:
    app = net.client.app
    net.client.portal.call(purge_round, app.state.tidings, app.state.safety)  # type: ignore[union-attr, attr-defined]


def test_a_hold_outlives_expiry_and_deletion_then_its_end_deletes(
    world: Net,
) -> None:
    net = world
    legal = _principal(net, "lena", {Role.LEGAL})
    user = net.register("held")
    kept = net.upload(user, b"preserved attachment bytes")
    hold = net.safety.holds.place(
        legal, user.username, HoldKind.PRESERVATION_REQUEST, days=90, reference="FBI 2026-77"
    )
    frozen = json.loads(hold.snapshot)
    assert frozen["account"]["username"] == user.username
    assert [d["device_id"] for d in frozen["devices"]] == [1]
    assert "credential" not in hold.snapshot  # public keys and metadata only
    assert hold.attachment_ids() == [kept.id]
    later = net.upload(user, b"uploaded after the hold")  # not preserved: not in existence then

    time.sleep(1.2)  # both attachments past their 1-second expiry
    _purge(net)
    assert _stored(net, kept.id) and not _stored(net, later.id)

    r = net.client.delete("/v1/accounts/me", headers=user.auth)
    assert r.status_code == 204
    _purge(net)
    assert _stored(net, kept.id)  # the account is gone; the held bytes are not
    assert net.safety.holds.active_for(user.username)[0].hold_id == hold.hold_id

    extended = net.safety.holds.extend(legal, hold.hold_id, days=120)
    assert extended.until_ms >= hold.until_ms + 29 * DAY_MS
    released = net.safety.holds.release(legal, hold.hold_id, reason="request withdrawn")
    assert released.released_by == legal.staff_id
    _purge(net)
    assert not _stored(net, kept.id)
    stored = net.safety.holds.repository.get(hold.hold_id)
    assert stored is not None and stored.cleared
    actions = [e.action for e in net.safety.audit_repo.entries()]
    for action in (AuditAction.HOLD_PLACE, AuditAction.HOLD_EXTEND, AuditAction.HOLD_RELEASE):
        assert action.value in actions


def test_only_legal_manages_holds_and_refusals_change_nothing(world: Net) -> None:
    net = world
    legal = _principal(net, "lena", {Role.LEGAL})
    reviewer = _principal(net, "rita", {Role.REVIEWER})
    user = net.register("subject")
    with pytest.raises(PermissionDeniedError):
        net.safety.holds.place(reviewer, user.username, HoldKind.PRESERVATION_REQUEST,
                               days=90, reference="x")
    assert net.safety.holds.repository.all() == []
    for bad in ({"days": 0}, {"days": 10_000}, {"reference": ""}, {"reference": "x" * 201}):
        args: dict[str, Any] = {"days": 90, "reference": "ok", **bad}
        with pytest.raises(SafetyInputError):
            net.safety.holds.place(legal, user.username, HoldKind.PRESERVATION_REQUEST, **args)
    assert net.safety.holds.repository.all() == []
    hold = net.safety.holds.place(legal, user.username, HoldKind.REFERRAL, days=365,
                                  reference="NCMEC 123")
    with pytest.raises(PermissionDeniedError):
        net.safety.holds.release(reviewer, hold.hold_id, reason="no")
    with pytest.raises(NotFoundError):
        net.safety.holds.release(legal, "hold_unknown", reason="no")
    with pytest.raises(SafetyInputError):
        net.safety.holds.release(legal, hold.hold_id, reason="")
    assert net.safety.holds.repository.get(hold.hold_id) == hold
    net.safety.holds.release(legal, hold.hold_id, reason="done")
    with pytest.raises(SafetyInputError):  # no longer active
        net.safety.holds.extend(legal, hold.hold_id, days=10)


def test_a_hold_on_an_unknown_account_freezes_nothing_but_is_recorded(
    world: Net,
) -> None:
    net = world
    legal = _principal(net, "lena", {Role.LEGAL})
    hold = net.safety.holds.place(legal, "nobody", HoldKind.PRESERVATION_REQUEST, days=90,
                                  reference="Met Police 42")
    assert json.loads(hold.snapshot) == {"account": None, "devices": [], "attachments": []}
    assert [h.hold_id for h in net.safety.holds.holds(legal)] == [hold.hold_id]


def test_a_finished_referral_holds_the_account_once(world: Net) -> None:
    net = world
    user = net.register("referred")
    net.upload(user, b"kept for the clearinghouse")
    safety = net.safety
    assert safety.referrals.on_referred == safety._hold_referred
    until = safety.clock() + 365 * DAY_MS
    safety._hold_referred(user.username, "case_x", until)
    safety._hold_referred(user.username, "case_x", until)  # a retried hook: no second hold
    (hold,) = safety.holds.active_for(user.username)
    assert hold.kind is HoldKind.REFERRAL and hold.case_id == "case_x"
    assert hold.placed_by == "system" and len(hold.attachment_ids()) == 1
    assert hold.until_ms >= until - 60_000
