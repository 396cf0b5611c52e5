"""A production reads every category the data inventory lists, on memory, SQLite and
PostgreSQL: for an account with a record in every table, each field a category lists is in
what is produced, and nothing else — never envelope or evidence bytes, a credential hash or a
second reviewer's reasoning."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.safety.test_lawful import T0, Clock, World, _service
from tests.support.staff import active_staff
from tidings.clock import DAY_MS
from tidings.safety.bank_match import MatchedEntry
from tidings.safety.case_model import (
    AppealRecord,
    CaseRecord,
    CaseSource,
    CaseState,
    DecisionKind,
    DecisionRecord,
    Enforcement,
    EnforcementKind,
)
from tidings.safety.categories import Category, ConversationKind, Severity
from tidings.safety.detection_model import DetectionMatch
from tidings.safety.evidence import EvidenceRecord
from tidings.safety.holds import HoldKind, InMemorySubjectRecords
from tidings.safety.lawful_model import RequestType
from tidings.safety.referral_records import ReferralRecord
from tidings.safety.reports import (
    ItemRole,
    ReplayKey,
    ReplayKind,
    ReportedItemRecord,
    ReportMatch,
    ReportRecord,
)
from tidings.safety.sql import SafetyDatabase
from tidings.safety.staff import Role

SEALED = b"sealed-evidence-bytes-never-produced"
ENVELOPE = b"an-envelope-never-produced" * 4
DELIBERATION = "second reviewer's reasoning, never produced"


@pytest.fixture
def world(safety_db: SafetyDatabase | None) -> Iterator[World]:
    clock = Clock()
    safety = _service(safety_db, clock)
    safety.lawful.signing_key = os.urandom(32)
    safety.lawful.allowed_domains = frozenset({"fbi.gov"})
    legal = safety.staff.principal_for(active_staff(safety, "lena", {Role.LEGAL}).staff_id)
    reviewer = safety.staff.principal_for(active_staff(safety, "rita", {Role.REVIEWER}).staff_id)
    yield World(safety, clock, legal, reviewer, safety.lawful.signing_key)
    if safety_db is not None:
        safety.close()


def _evidence(evidence_id: str, report_id: str) -> EvidenceRecord:
    return EvidenceRecord(evidence_id=evidence_id, report_id=report_id, kind="image/jpeg",
                          key_id="ev1", nonce=b"\0" * 12, ciphertext=SEALED,
                          plaintext_size=4096, child_safety=True, created_ms=T0,
                          expires_ms=T0 + 365 * DAY_MS)


def _populate(world: World) -> None:
    """A record about ``alice`` in every table the inventory names."""
    safety = world.safety
    subjects = safety.lawful.subjects
    assert isinstance(subjects, InMemorySubjectRecords)
    subjects.production["alice"] = {
        "devices": [{"device_id": 1, "registration_id": 7, "identity_key": "aWs",
                     "signed_prekey": "c3Br", "last_resort_kem_prekey": "a2Vt"}],
        "one_time_prekeys": [{"device_id": 1, "key_id": 5, "prekey": "b3Rr"}],
        "kem_prekeys": [{"device_id": 1, "key_id": 6, "prekey": "a2Vt"}],
        "messages": [{"device_id": 1, "created_at_ms": T0, "expires_at_ms": T0 + DAY_MS,
                      "size": len(ENVELOPE)}],
    }
    case = CaseRecord(case_id="case1", subject="alice", queue_id="q",
                      category=Category.VIOLENT_THREAT,
                      severity=Severity.HIGH, base_priority=1, priority=1,
                      state=CaseState.ACTIONED, created_ms=T0, updated_ms=T0,
                      sla_due_ms=T0 + DAY_MS, report_count=1, reporter_count=1,
                      source=CaseSource.REPORT)
    safety.case_repo.add_case(case)
    decision = DecisionRecord(decision_id="dec1", case_id="case1", subject="alice",
                              kind=DecisionKind.WARN, policy_id="p1", reason="harassment",
                              decided_by="rita", decided_ms=T0,
                              second_review_reason=DELIBERATION)
    safety.case_repo.add_decision(decision)
    safety.case_repo.add_appeal(AppealRecord(appeal_id="ap1", decision_id="dec1",
                                             case_id="case1", account="alice", filed_ms=T0,
                                             statement="it was a joke"))
    report = ReportRecord(report_id="rep1", reporter="bob", reporter_device=1, subject="alice",
                          subject_device=1, category=case.category,
                          conversation_kind=ConversationKind.DIRECT,
                          conversation_id=b"c" * 32, reported_message_id=b"m" * 16,
                          received_ms=T0, item_count=1, attachment_count=1, case_id="case1")
    item = ReportedItemRecord(commitment=b"k" * 32, sender="alice", sender_device=1,
                              recipient="bob", recipient_device=1, server_timestamp_ms=T0,
                              message_id=b"m" * 16, report_id="rep1", index=0,
                              role=ItemRole.REPORTED, franking_key_id="f1",
                              franking_verified=True, chain_verified=True,
                              attachments_verified=1)
    entry = MatchedEntry(bank="b1", entry_id="e1", distance=0, sources=(("ncmec", "x"),))
    match = ReportMatch(report_id="rep1", item_index=0, attachment_index=0, attachment_id="att9",
                        sha256=b"s" * 32, pdq=b"p" * 32, distance=0, entries=(entry,),
                        matched_ms=T0)
    safety.report_repo.store_verified_report(report, [item], [_evidence("evr", "rep1")],
                                             [ReplayKey("r" * 64, ReplayKind.REPORT)],
                                             [match])
    detection = safety.detection_repo
    assert detection is not None
    detection.store_match(
        DetectionMatch(match_id="dm1", case_id="case1", opened_id="op1", account="alice",
                       device_id=1, evidence_id="evd", attachment_id="att8",
                       content_type="image/jpeg", message_id=b"n" * 16, device_pdq=b"d" * 32,
                       server_pdq=b"e" * 32, distance=3, entries=(entry,), matched_ms=T0),
        _evidence("evd", "dm1"),
    )
    safety.enforcement_repo.add_enforcement(
        Enforcement(enforcement_id="enf1", account="alice", kind=EnforcementKind.WARN,
                    until_ms=None, decision_id="dec1", case_id="case1", created_ms=T0)
    )
    safety.holds.place(world.legal, "alice", HoldKind.PRESERVATION_REQUEST, days=10,
                       reference="FBI 2026-FO-117")
    safety.referral_repo.add_referral(
        ReferralRecord(referral_id="ref1", case_id="case1", seq=1, account="alice",
                       prepared_by="rita", prepared_ms=T0, document="{}", progress="{}")
    )


def _produce(world: World, kind: RequestType, **extra: Any) -> dict[str, Any]:
    lawful = world.safety.lawful
    keys = [c.key for c in lawful.categories()]
    intake = world.receive(kind=kind, scope=keys)
    rid = intake.request.request_id
    lawful.verify(rid, intake.token)
    lawful.review(world.legal, rid)
    scoped = lawful.scope(world.legal, rid, **extra)
    assert scoped.scope_keys() == keys  # every category is producible
    assert json.loads(scoped.dropped) == {}
    _, package = lawful.produce(world.legal, rid)
    return json.loads(package.files["production.json"])


def test_every_listed_field_of_every_category_is_produced_and_nothing_else(
    world: World,
) -> None:
    _populate(world)
    production = _produce(world, RequestType.EMERGENCY, justification="threat to life")
    by_key = {c.key: c for c in world.safety.lawful.categories()}
    for produced in production["categories"]:
        category = by_key[produced["key"]]
        seen = {f"{r['table']}.{k}" for r in produced["records"] for k in r if k != "table"}
        tables = {r["table"] for r in produced["records"]}
        assert tables == set(category.tables), category.key
        for field in category.fields:
            if not field.endswith(".*"):
                assert field in seen, field
        assert all(f in category.fields or f"{f.split('.')[0]}.*" in category.fields
                   for f in seen), category.key
        assert not seen & {f for f, _ in category.excluded}, category.key
    body = json.dumps(production)
    for secret in ("c2VhbGVk", SEALED.decode(), ENVELOPE.decode()[:20], DELIBERATION,
                   "credential-hash-never-produced"):
        assert secret not in body
    records = {c["key"]: c["records"] for c in production["categories"]}
    (envelope,) = records["queued_envelopes"]
    assert envelope == {"table": "messages", "device_id": 1, "created_at_ms": T0,
                        "expires_at_ms": T0 + DAY_MS, "size": len(ENVELOPE)}
    evidence = sorted(r["evidence_id"] for r in records["reports"]
                      if r["table"] == "safety_evidence")
    assert evidence == ["evr"]
    assert [r["evidence_id"] for r in records["detection"]
            if r["table"] == "safety_evidence"] == ["evd"]


def test_a_production_reads_only_the_requests_account(world: World) -> None:
    _populate(world)
    production = _produce(world, RequestType.EMERGENCY, justification="threat to life")
    assert production["request"]["account"] == "alice"
    intake = world.receive(kind=RequestType.SEARCH_WARRANT, account="carol",
                           scope=["reports", "enforcement", "queued_envelopes"])
    rid = intake.request.request_id
    lawful = world.safety.lawful
    lawful.verify(rid, intake.token)
    lawful.review(world.legal, rid)
    lawful.scope(world.legal, rid)
    _, package = lawful.produce(world.legal, rid)
    other = json.loads(package.files["production.json"])
    assert all(c["records"] == [] for c in other["categories"])


def test_a_category_the_node_cannot_read_in_full_is_dropped_not_produced_in_part(
    world: World,
) -> None:
    lawful = world.safety.lawful
    lawful.sources = None  # a service wired without the repositories beyond its own
    request = world.receive(kind=RequestType.SEARCH_WARRANT,
                            scope=["subscriber", "public_keys", "reports"]).request
    kept, dropped = lawful.plan_scope(request)
    assert kept == ["subscriber"]
    assert dropped == {"public_keys": "not readable on this node",
                       "reports": "not readable on this node"}
