"""Lawful requests on memory, SQLite and PostgreSQL: the whole workflow to a package that
verifies offline; scope narrowed against the inventory and the request's process; refusals
typed and changing nothing; emergency disclosure needs a justification; a non-disclosure order
delays the user notice to its end date; a tampered package fails `tidings audit package`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.support.staff import active_staff
from tidings.cli import cli
from tidings.clock import DAY_MS
from tidings.crypto.primitives import ed25519_public
from tidings.errors import (
    InvalidLawfulRequestError,
    LawfulRequestStateError,
    LawfulVerificationError,
    NotFoundError,
    PackageVerificationError,
    PermissionDeniedError,
)
from tidings.safety.audit import AuditAction
from tidings.safety.evidence import EvidenceKeyRing
from tidings.safety.holds import HoldKind, InMemorySubjectRecords
from tidings.safety.lawful import EMERGENCY_DUE_MS, PORTAL
from tidings.safety.lawful_model import TRANSITIONS, RequestState, RequestType, by_urgency
from tidings.safety.lawful_package import verify_package, write_package
from tidings.safety.reports import FrankingKey, FrankingKeyRing
from tidings.safety.service import SafetyRepositories, SafetyService
from tidings.safety.sql import SafetyDatabase
from tidings.safety.staff import Principal, Role
from tidings.wire import pb
from tidings.wire.base64url import b64e

T0 = 1_780_000_000_000
SECRET_CREDENTIAL = "credential-hash-never-produced"


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class World:
    safety: SafetyService
    clock: Clock
    legal: Principal
    reviewer: Principal
    key: bytes

    def receive(self, **overrides: Any) -> Any:
        fields: dict[str, Any] = {
            "agency": "FBI Field Office",
            "officer_name": "Dana Scully",
            "officer_email": "dscully@fbi.gov",
            "country": "us",
            "case_number": "2026-FO-117",
            "legal_basis": "18 U.S.C. 2703(c)(2) subpoena",
            "kind": RequestType.SUBPOENA,
            "account": "alice",
            "scope": ["subscriber", "devices", "attachments", "ip_addresses", "reports"],
            "due_ms": self.clock.now + 10 * DAY_MS,
        }
        fields.update(overrides)
        if fields["kind"] == RequestType.EMERGENCY:
            fields.setdefault("emergency_justification", "a credible threat to a child's life")
        return self.safety.lawful.receive(self.legal, **fields)


def _subjects() -> InMemorySubjectRecords:
    subjects = InMemorySubjectRecords()
    subjects.accounts["alice"] = {
        "created_at_ms": T0 - 100 * DAY_MS,
        "devices": [{"device_id": 1, "name": "phone", "registration_id": 7,
                     "identity_key": "BXlzaWRlbnRpdHk", "created_at_ms": T0 - 100 * DAY_MS,
                     "last_seen_ms": T0 - DAY_MS, "credential_hash": SECRET_CREDENTIAL}],
    }
    subjects.attachments["att1"] = {"account": "alice", "size": 1234,
                                    "created_at_ms": T0 - 2 * DAY_MS,
                                    "expires_at_ms": T0 + 28 * DAY_MS}
    return subjects


def _service(db: SafetyDatabase | None, clock: Clock) -> SafetyService:
    keys: dict[str, Any] = {
        "franking_keys": FrankingKeyRing([FrankingKey("f1", os.urandom(32))]),
        "evidence_keys": EvidenceKeyRing({"ev1": os.urandom(32)}, "ev1"),
        "fetcher": lambda _id: None,
        "clock": clock,
    }
    if db is not None:
        # The lawful requests, holds and audit on SQL; the messaging records a production
        # reads from memory (the SQL reader is `SqlSubjectRecords`, tested with holds).
        repos = replace(SafetyRepositories.sql(db.url, schema=db.schema), subjects=_subjects())
        return SafetyService(repos, **keys)
    repos = SafetyRepositories.in_memory(subjects=_subjects())
    return SafetyService(repos, **keys)


@pytest.fixture
def world(safety_db: SafetyDatabase | None) -> Iterator[World]:
    clock = Clock()
    safety = _service(safety_db, clock)
    key = os.urandom(32)
    safety.lawful.signing_key = key
    safety.lawful.allowed_domains = frozenset({"fbi.gov"})
    legal = safety.staff.principal_for(active_staff(safety, "lena", {Role.LEGAL}).staff_id)
    reviewer = safety.staff.principal_for(active_staff(safety, "rita", {Role.REVIEWER}).staff_id)
    yield World(safety, clock, legal, reviewer, key)
    if safety_db is not None:
        safety.close()


def _audit(world: World) -> list[Any]:
    return [e for e in world.safety.audit_repo.entries() if e.action.startswith("lawful.")]


def test_the_whole_workflow_gives_a_package_that_verifies(world: World, tmp_path: Path) -> None:
    lawful, legal = world.safety.lawful, world.legal
    intake = world.receive()
    request = intake.request
    assert request.state is RequestState.RECEIVED and request.country == "US"
    assert request.domain_allowed
    stored = lawful.repository.get(request.request_id)
    assert stored is not None and intake.token not in json.dumps(stored.to_json())
    assert stored.token_hash and stored.token_hash != intake.token
    (sent,) = json.loads(stored.outbox)
    assert sent["to"] == "dscully@fbi.gov"
    lawful.verify(request.request_id, intake.token)
    with pytest.raises(LawfulRequestStateError):  # one-time: verified once
        lawful.verify(request.request_id, intake.token)
    assert lawful.repository.get(request.request_id).token_hash is None  # type: ignore[union-attr]
    lawful.review(legal, request.request_id)
    scoped = lawful.scope(legal, request.request_id)
    assert scoped.scope_keys() == ["subscriber", "devices"]
    dropped = json.loads(scoped.dropped)
    assert dropped["attachments"] == "needs a court_order; this is a subpoena"
    assert "not in the data inventory" in dropped["ip_addresses"]
    assert set(dropped) == {"attachments", "ip_addresses", "reports"}
    world.clock.now += 1000
    produced, package = lawful.produce(legal, request.request_id)
    assert produced.state is RequestState.PRODUCED
    assert produced.manifest_sha256 == package.manifest_sha256
    directory = tmp_path / "package"
    write_package(package, directory)
    manifest = verify_package(directory, public_key=ed25519_public(world.key))
    assert set(manifest["files"]) == {"production.json", "production.html"}
    body = (directory / "production.json").read_text()
    assert SECRET_CREDENTIAL not in body and "identity_key" not in body  # not in "devices"
    production = json.loads(body)
    assert [c["key"] for c in production["categories"]] == ["subscriber", "devices"]
    devices = production["categories"][1]["records"]
    assert devices == [{"table": "devices", "device_id": 1, "name": "phone",
                        "created_at_ms": T0 - 100 * DAY_MS, "last_seen_ms": T0 - DAY_MS}]
    assert "token_hash" not in production["request"]
    assert "Dana Scully" in (directory / "production.html").read_text()
    ok = CliRunner().invoke(cli, ["audit", "package", str(directory), "--json",
                                  "--public-key", b64e(ed25519_public(world.key))])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["request_id"] == request.request_id
    assert lawful.due_notices() == []
    delivered = lawful.deliver(legal, request.request_id)
    assert delivered.notice_due_ms == world.clock.now
    (notice,) = lawful.due_notices()
    assert (notice.account, notice.request_id) == ("alice", request.request_id)
    closed = lawful.close(legal, request.request_id)
    assert closed.state is RequestState.CLOSED
    actions = [(e.actor, json.loads(e.details).get("action") if isinstance(e.details, str)
                else e.details.get("action")) for e in _audit(world)]
    assert actions[0] == (legal.staff_id, None)  # lawful.receive
    assert (f"requester:{request.officer_email}", "verify") in actions
    assert [a for who, a in actions if who == legal.staff_id][1:] == [
        "review", "scope", "produce", "deliver", "close"]


def test_the_transition_table_is_the_workflow() -> None:
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) == set(RequestState)
    assert not any(s is RequestState.CLOSED for s, _ in TRANSITIONS)  # closed is final


def test_scope_follows_the_process_of_the_request(world: World) -> None:
    lawful = world.safety.lawful
    for kind, kept in [
        (RequestType.COURT_ORDER, ["subscriber", "devices", "attachments"]),
        (RequestType.SEARCH_WARRANT, ["subscriber", "devices", "attachments", "reports"]),
    ]:
        request = world.receive(kind=kind).request
        assert lawful.plan_scope(request)[0] == kept
    request = world.receive(kind=RequestType.COURT_ORDER,
                            scope=["subscriber", "attachments"]).request
    kept_only, dropped = lawful.plan_scope(request, ["attachments"])
    assert kept_only == ["attachments"] and dropped == {"subscriber": "narrowed by legal"}


def test_refusals_are_typed_and_change_nothing(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    with pytest.raises(PermissionDeniedError):
        world.safety.lawful.receive(world.reviewer, agency="x", officer_name="x",
                                    officer_email="a@fbi.gov", country="US", case_number="1",
                                    legal_basis="x", kind="subpoena", account="alice",
                                    scope=["subscriber"], due_ms=world.clock.now + DAY_MS)
    bads: list[dict[str, Any]] = [
        {"country": "USA"}, {"officer_email": "nobody"}, {"scope": []},
        {"scope": ["Subscriber; DROP"]}, {"due_ms": T0 - 1}, {"kind": "letter"},
        {"agency": " "},
    ]
    for bad in bads:
        with pytest.raises(InvalidLawfulRequestError):
            world.receive(**bad)
    assert lawful.repository.all() == []
    intake = world.receive(scope=["ip_addresses", "reports"])
    rid = intake.request.request_id
    before = len(world.safety.audit_repo.rows) if hasattr(world.safety.audit_repo, "rows") \
        else sum(1 for _ in world.safety.audit_repo.entries())
    with pytest.raises(LawfulVerificationError):
        lawful.verify(rid, "not-the-token")
    with pytest.raises(LawfulRequestStateError):
        lawful.review(legal, rid)
    with pytest.raises(LawfulRequestStateError):
        lawful.produce(legal, rid)
    with pytest.raises(PermissionDeniedError):
        lawful.review(world.reviewer, rid)
    assert lawful.repository.get(rid) == intake.request
    after = sum(1 for _ in world.safety.audit_repo.entries())
    assert after == before
    lawful.verify(rid, intake.token)
    lawful.review(legal, rid)
    with pytest.raises(InvalidLawfulRequestError):  # nothing producible: reject instead
        lawful.scope(legal, rid)
    with pytest.raises(InvalidLawfulRequestError):  # only preservation closes from review
        lawful.close(legal, rid)
    assert lawful.repository.get(rid).state is RequestState.IN_REVIEW  # type: ignore[union-attr]
    rejected = lawful.reject(legal, rid, reason="asks only for data the provider does not hold")
    assert rejected.state is RequestState.REJECTED
    assert lawful.close(legal, rid).state is RequestState.CLOSED


def test_an_unlisted_domain_needs_legal_to_accept_it(world: World) -> None:
    lawful = world.safety.lawful
    intake = world.receive(officer_email="someone@mail.example")
    assert not intake.request.domain_allowed
    with pytest.raises(LawfulVerificationError, match="unverified domain"):
        lawful.verify(intake.request.request_id, intake.token)
    verified = lawful.verify(intake.request.request_id, intake.token, actor=world.legal,
                             accept_unlisted_domain=True)
    assert verified.state is RequestState.VERIFIED
    entry = _audit(world)[-1]
    details = json.loads(entry.details) if isinstance(entry.details, str) else entry.details
    assert entry.actor == world.legal.staff_id and details["unlisted_domain_accepted"] is True


def test_an_emergency_disclosure_needs_a_justification(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    before = len(lawful.repository.all())
    for missing in (None, "   "):
        with pytest.raises(InvalidLawfulRequestError, match="justification"):
            world.receive(kind=RequestType.EMERGENCY, scope=["subscriber"],
                          emergency_justification=missing)
    assert len(lawful.repository.all()) == before
    intake = world.receive(kind=RequestType.EMERGENCY, scope=["subscriber", "attachments"],
                           due_ms=None, emergency_justification="Hostage taken, 10:02")
    assert intake.request.emergency_justification == "Hostage taken, 10:02"
    assert intake.request.due_ms == world.clock.now + EMERGENCY_DUE_MS  # 24 h by default
    rid = intake.request.request_id
    lawful.verify(rid, intake.token)
    lawful.review(legal, rid)
    with pytest.raises(InvalidLawfulRequestError):
        lawful.scope(legal, rid)
    with pytest.raises(InvalidLawfulRequestError):
        lawful.scope(legal, rid, justification="   ")
    assert lawful.repository.get(rid).state is RequestState.IN_REVIEW  # type: ignore[union-attr]
    scoped = lawful.scope(legal, rid, justification="Credible threat to life, call at 09:12")
    assert scoped.scope_keys() == ["subscriber", "attachments"]  # any category
    assert scoped.justification == "Credible threat to life, call at 09:12"


def _portal_fields(world: World, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agency": "FBI Field Office", "officer_name": "Dana Scully",
        "officer_email": "dscully@fbi.gov", "country": "US", "case_number": "2026-FO-118",
        "legal_basis": "18 U.S.C. 2703(d) order", "kind": "court_order", "account": "alice",
        "scope": ["subscriber"], "due_ms": world.clock.now + 5 * DAY_MS,
    }
    fields.update(overrides)
    return fields


def test_a_portal_submission_is_the_requesters_own_and_staff_only_steps_stay_staffs(
    world: World,
) -> None:
    lawful = world.safety.lawful
    intake = lawful.submit(**_portal_fields(world))
    request = intake.request
    assert request.received_by == PORTAL and request.state is RequestState.RECEIVED
    (entry,) = _audit(world)
    assert (entry.actor, entry.action) == ("requester:dscully@fbi.gov", AuditAction.LAWFUL_RECEIVE)
    access = lawful.confirm(request.request_id, intake.token)
    assert access.request.state is RequestState.VERIFIED
    assert access.key not in repr(access) and access.request.access_hash != access.key
    assert lawful.status(request.request_id, access.key) == access.request
    assert [e.actor for e in _audit(world)] == ["requester:dscully@fbi.gov"] * 3
    with pytest.raises(NotFoundError) as wrong:
        lawful.status(request.request_id, access.key + "x")
    with pytest.raises(NotFoundError) as unknown:
        lawful.status("lr_nope", access.key)
    assert wrong.value.message == unknown.value.message  # no oracle
    # An unlisted domain is only flagged: the portal cannot accept it (legal's to do).
    other = lawful.submit(**_portal_fields(world, officer_email="x@mail.example"))
    assert not other.request.domain_allowed
    with pytest.raises(LawfulVerificationError, match="unverified domain"):
        lawful.confirm(other.request.request_id, other.token)
    assert lawful.repository.get(other.request.request_id) == other.request


def test_a_portal_preservation_request_is_held_by_the_system_once_verified(
    world: World,
) -> None:
    lawful = world.safety.lawful
    intake = lawful.submit(**_portal_fields(world, kind="preservation", scope=[]))
    # An unverified stranger cannot freeze an account: nothing is held before the link.
    assert intake.request.hold_id is None and world.safety.holds.active_for("alice") == []
    lawful.confirm(intake.request.request_id, intake.token)
    (hold,) = world.safety.holds.active_for("alice")
    stored = lawful.repository.get(intake.request.request_id)
    assert stored is not None and stored.hold_id == hold.hold_id
    assert hold.placed_by == "system"


def test_refused_portal_submissions_store_nothing(world: World) -> None:
    lawful = world.safety.lawful
    bad: list[dict[str, Any]] = [
        {"kind": "wiretap"}, {"country": "USA"}, {"country": "1X"},
        {"officer_email": "not-an-email"}, {"scope": []}, {"scope": ["Bad Key"]},
        {"due_ms": None}, {"due_ms": world.clock.now - 1}, {"agency": ""},
        {"kind": "emergency", "emergency_justification": ""},
    ]
    for override in bad:
        with pytest.raises(InvalidLawfulRequestError):
            lawful.submit(**_portal_fields(world, **override))
    assert lawful.repository.all() == [] and _audit(world) == []


def test_open_emergencies_come_first_then_the_earliest_due(world: World) -> None:
    lawful, now = world.safety.lawful, world.clock.now
    late = lawful.submit(**_portal_fields(world, due_ms=now + 9 * DAY_MS)).request
    soon = lawful.submit(**_portal_fields(world, due_ms=now + 2 * DAY_MS)).request
    world.clock.now += 1
    sos = lawful.submit(**_portal_fields(
        world, kind="emergency", due_ms=None, emergency_justification="Threat to life"
    )).request
    assert sos.urgent and not soon.urgent
    ordered = by_urgency(lawful.repository.all())
    assert [r.request_id for r in ordered] == [sos.request_id, soon.request_id, late.request_id]


def test_a_preservation_request_holds_the_account_for_90_days(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    intake = world.receive(kind=RequestType.PRESERVATION, scope=[])
    request = intake.request
    (hold,) = world.safety.holds.active_for("alice")
    assert request.hold_id == hold.hold_id and hold.kind is HoldKind.PRESERVATION_REQUEST
    assert hold.until_ms == world.clock.now + 90 * DAY_MS
    lawful.verify(request.request_id, intake.token)
    lawful.review(legal, request.request_id)
    assert lawful.close(legal, request.request_id).state is RequestState.CLOSED


class _FailingOnce:
    """A hold service whose first placement fails (the database went away mid-intake)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def place(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise OSError("the hold store is unavailable")
        return self.real.place(*args, **kwargs)


def test_a_preservation_request_is_never_recorded_without_its_hold(world: World) -> None:
    lawful = world.safety.lawful
    failing = _FailingOnce(lawful.holds)
    lawful.holds = failing
    entries = sum(1 for _ in world.safety.audit_repo.entries())
    with pytest.raises(OSError):
        world.receive(kind=RequestType.PRESERVATION, scope=[])
    assert failing.failed
    assert lawful.repository.all() == []  # no request without its hold
    assert world.safety.holds.active_for("alice") == []
    assert sum(1 for _ in world.safety.audit_repo.entries()) == entries
    request = world.receive(kind=RequestType.PRESERVATION, scope=[]).request  # taken in again
    (hold,) = world.safety.holds.active_for("alice")
    assert lawful.repository.get(request.request_id) == request
    assert request.hold_id == hold.hold_id
    details = _audit(world)[-1].details
    assert (json.loads(details) if isinstance(details, str) else details)["hold"] == hold.hold_id


def test_a_non_disclosure_order_delays_the_notice_until_it_ends(world: World) -> None:
    lawful, legal = world.safety.lawful, world.legal
    intake = world.receive()
    rid = intake.request.request_id
    ends = world.clock.now + 180 * DAY_MS
    with pytest.raises(InvalidLawfulRequestError):
        lawful.record_ndo(legal, rid, until_ms=world.clock.now, reference="order 1")
    lawful.record_ndo(legal, rid, until_ms=ends, reference="18 U.S.C. 2705(b) order 26-4")
    lawful.verify(rid, intake.token)
    lawful.review(legal, rid)
    lawful.scope(legal, rid)
    lawful.produce(legal, rid)
    delivered = lawful.deliver(legal, rid)
    assert delivered.notice_due_ms == ends
    with pytest.raises(InvalidLawfulRequestError):  # too late to order silence
        lawful.record_ndo(legal, rid, until_ms=ends + DAY_MS, reference="late")
    assert lawful.due_notices() == []
    assert lawful.due_notices(ends - 1) == []
    assert "lawful_notices" not in world.safety.account_status("alice").to_json()
    world.clock.now = ends
    (notice,) = lawful.due_notices()
    assert notice.due_ms == ends and notice.account == "alice"
    (shown,) = world.safety.account_status("alice").to_json()["lawful_notices"]
    assert (shown["request_id"], shown["kind"], shown["country"], shown["categories"]) == (
        rid, "subpoena", "US", ["subscriber", "devices"])
    assert world.safety.account_status("bob").to_json() == {"status": "active"}


def test_a_tampered_package_fails_the_audit(world: World, tmp_path: Path) -> None:
    lawful, legal = world.safety.lawful, world.legal
    intake = world.receive()
    rid = intake.request.request_id
    lawful.verify(rid, intake.token)
    lawful.review(legal, rid)
    lawful.scope(legal, rid)
    _, package = lawful.produce(legal, rid)
    runner = CliRunner()

    def fresh(name: str) -> Path:
        directory = tmp_path / name
        write_package(package, directory)
        return directory

    def audit(directory: Path, *extra: str) -> int:
        return runner.invoke(cli, ["audit", "package", str(directory), *extra]).exit_code

    assert audit(fresh("good")) == 0
    changed = fresh("changed")
    body = (changed / "production.json").read_bytes()
    (changed / "production.json").write_bytes(body.replace(b"phone", b"phonf"))
    manifest = fresh("manifest")
    text = (manifest / "manifest.json").read_text()
    (manifest / "manifest.json").write_text(text.replace('"request_id"', '"request_id" ', 1))
    extra = fresh("extra")
    (extra / "notes.txt").write_text("added later")
    missing = fresh("missing")
    (missing / "production.html").unlink()
    resigned = fresh("resigned")  # a forger's own key: only a pinned key catches it
    for directory in (changed, manifest, extra, missing):
        assert audit(directory) == 1, directory.name
        with pytest.raises(PackageVerificationError):
            verify_package(directory)
    other = os.urandom(32)
    assert audit(resigned, "--public-key", b64e(ed25519_public(other))) == 1
    assert audit(tmp_path / "nowhere") == 1


def test_admin_lawful_list_and_show_are_read_only_and_audited(tmp_path: Path) -> None:
    from tidings.app import open_safety
    from tidings.server.config import ServerConfig

    config = ServerConfig(data_dir=tmp_path)
    safety = open_safety(config)
    try:
        legal = safety.staff.principal_for(active_staff(safety, "lena", {Role.LEGAL}).staff_id)
        intake = safety.lawful.receive(
            legal, agency="NCA", officer_name="J. Doe", officer_email="jd@nca.example",
            country="GB", case_number="NCA-9", legal_basis="Investigatory Powers Act 2016",
            kind="court_order", account="bob", scope=["subscriber"],
            due_ms=safety.clock() + DAY_MS,
        )
    finally:
        safety.close()
    where = ["--data-dir", str(tmp_path)]
    runner = CliRunner()
    listed = runner.invoke(cli, ["admin", "lawful", "list", *where, "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)["requests"]
    assert (row["request_id"], row["state"], row["country"]) == (
        intake.request.request_id, "received", "GB")
    text = runner.invoke(cli, ["admin", "lawful", "list", *where])
    assert "unverified domain" in text.stdout
    shown = runner.invoke(cli, ["admin", "lawful", "show", intake.request.request_id, *where])
    assert shown.exit_code == 0 and "Investigatory Powers Act" in shown.stdout
    missing = runner.invoke(cli, ["admin", "lawful", "show", "nope", *where, "--json"])
    assert missing.exit_code == 1 and "not_found" in missing.stdout
    safety = open_safety(config)
    try:
        entries = [(e.actor, e.action) for e in safety.audit_repo.entries()]
    finally:
        safety.close()
    assert entries.count(("operator:cli", AuditAction.LAWFUL_LIST.value)) == 2
    assert ("operator:cli", AuditAction.LAWFUL_VIEW.value) in entries


@pytest.fixture(params=["sqlite", "postgresql"])
def app_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    import secrets

    from tests.support.app import make_config
    from tests.support.services import PG_URL, pg_admin, require_service

    if request.param == "sqlite":
        yield make_config(tmp_path / "data")
        return
    schema = f"tidings_lawful_{secrets.token_hex(4)}"
    error = pg_admin(f'CREATE SCHEMA "{schema}"')
    require_service("PostgreSQL", not error, f"{PG_URL} ({error})")
    yield make_config(tmp_path / "data", database_url=PG_URL, database_schema=schema)
    pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_production_through_the_real_app_reads_the_messaging_records(
    app_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `create_app` (the composition root's signing key and allow-list, the SQL
    subject records): a court order's package holds the account's real device and attachment
    records, and no credential hash."""
    from fastapi.testclient import TestClient

    from tests.support.app import Net
    from tests.support.devices import ratchet_body
    from tidings.app import create_app

    monkeypatch.setenv("TIDINGS_LAWFUL_DOMAINS", "Police.Example")
    with TestClient(create_app(app_config), raise_server_exceptions=True) as client:
        net = Net(client, app_config)
        user = net.register("target")
        kept = net.upload(user, b"an encrypted attachment")
        sender = net.register("sender")
        queued = {"messages": [{"device_id": user.device_id,
                                "registration_id": user.registration_id,
                                "type": pb.Envelope.RATCHET, "body": b64e(ratchet_body()),
                                "commitment": b64e(b"\x02" * 32)}]}
        sent = client.put(f"/v1/messages/{user.username}", json=queued, headers=sender.auth)
        assert sent.status_code == 200, sent.text  # queued: the target never fetches it
        safety = net.safety
        legal = safety.staff.principal_for(active_staff(safety, "lena", {Role.LEGAL}).staff_id)
        intake = safety.lawful.receive(
            legal, agency="Police", officer_name="P. Officer",
            officer_email="p@police.example", country="DE", case_number="K-1",
            legal_basis="court order of the Amtsgericht", kind="court_order",
            account=user.username,
            scope=["subscriber", "devices", "public_keys", "attachments", "queued_envelopes"],
            due_ms=safety.clock() + DAY_MS,
        )
        rid = intake.request.request_id
        assert intake.request.domain_allowed
        safety.lawful.verify(rid, intake.token)
        safety.lawful.review(legal, rid)
        safety.lawful.scope(legal, rid)
        _, package = safety.lawful.produce(legal, rid)
        directory = tmp_path / "package"
        write_package(package, directory)
        key_file = app_config.data_dir / "lawful_signing.key"
        manifest = verify_package(directory, public_key=ed25519_public(key_file.read_bytes()))
        assert manifest["request_id"] == rid
        printed = CliRunner().invoke(cli, ["admin", "lawful", "public-key", "--data-dir",
                                           str(app_config.data_dir)])
        assert printed.exit_code == 0, printed.output
        assert printed.stdout.strip() == manifest["public_key"]
        production = json.loads((directory / "production.json").read_text())
        by_key = {c["key"]: c["records"] for c in production["categories"]}
        assert by_key["subscriber"] == [{"table": "accounts", "username": user.username,
                                         "created_at_ms": by_key["subscriber"][0]["created_at_ms"]}]
        assert [d["device_id"] for d in by_key["devices"]] == [1]
        assert by_key["public_keys"][0]["identity_key"]
        assert by_key["public_keys"][0]["signed_prekey"]
        assert {r["table"] for r in by_key["public_keys"]} == {
            "devices", "one_time_prekeys", "kem_prekeys"}
        (envelope,) = by_key["queued_envelopes"]
        assert envelope["table"] == "messages" and envelope["device_id"] == user.device_id
        assert envelope["size"] > 0 and "envelope" not in envelope
        assert [a["id"] for a in by_key["attachments"]] == [kept.id]
        assert "credential" not in (directory / "production.json").read_text()
        status = client.get("/v1/account/status", headers=user.auth).json()
        assert "lawful_notices" not in status  # not delivered yet
        safety.lawful.deliver(legal, rid)
        status = client.get("/v1/account/status", headers=user.auth).json()
        (notice,) = status["lawful_notices"]
        assert (notice["request_id"], notice["agency"]) == (rid, "Police")


def test_a_token_expires_and_the_html_escapes_what_the_requester_typed(
    world: World, tmp_path: Path
) -> None:
    lawful, legal = world.safety.lawful, world.legal
    late = world.receive()
    world.clock.now += 7 * DAY_MS
    with pytest.raises(LawfulVerificationError):
        lawful.verify(late.request.request_id, late.token)
    assert lawful.repository.get(late.request.request_id) == late.request
    intake = world.receive(agency="<script>alert(1)</script> Unit")
    rid = intake.request.request_id
    lawful.verify(rid, intake.token)
    lawful.review(legal, rid)
    lawful.scope(legal, rid, categories=["subscriber"])
    _, package = lawful.produce(legal, rid)
    page = package.files["production.html"].decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; Unit" in page


def test_the_transparency_report_counts_lawful_requests_from_their_records(
    world: World,
) -> None:
    from tidings.safety.transparency import TransparencySources, build_report, parse_period

    lawful, legal = world.safety.lawful, world.legal
    produced = world.receive()
    rid = produced.request.request_id
    lawful.record_ndo(legal, rid, until_ms=world.clock.now + 90 * DAY_MS, reference="2705(b)")
    lawful.verify(rid, produced.token)
    lawful.review(legal, rid)
    lawful.scope(legal, rid)
    lawful.produce(legal, rid)
    world.receive(kind=RequestType.PRESERVATION, country="gb", officer_email="a@fbi.gov")
    world.receive(kind=RequestType.EMERGENCY, country="gb", emergency_justification="Risk")
    sources = TransparencySources.of(world.safety)
    period = parse_period(f"{time.gmtime(T0 / 1000).tm_year}")
    report = build_report(sources, period, generated_ms=world.clock.now)
    section = report.section("lawful_requests")
    assert report.value("lawful_requests", "received") == 3
    assert dict(section.figure("received").breakdown) == {
        "preservation": 1, "subpoena": 1, "court_order": 0, "search_warrant": 0, "emergency": 1
    }
    assert dict(section.figure("by_country").breakdown) == {"GB": 2, "US": 1}
    assert report.value("lawful_requests", "data_produced") == 1
    assert report.value("lawful_requests", "emergency") == 1
    assert report.value("lawful_requests", "non_disclosure_orders") == 1
    assert report.value("lawful_requests", "preservation") == 1  # its 90-day hold
