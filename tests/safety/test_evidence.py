"""Evidence at rest: encrypted, bound to its record, rotatable, retained for a period, and
opened only through an audited, permission-checked path."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tidings.errors import (
    ChildSafetyPermissionError,
    ConflictError,
    DecryptionError,
    EvidenceExpiredError,
    PermissionDeniedError,
    SafetyInputError,
    UnknownKeyIdError,
)
from tidings.safety.audit import AuditAction
from tidings.safety.categories import QueueId
from tidings.safety.evidence import DAY_MS, EvidenceKeyRing
from tidings.safety.staff import Role

from .conftest import World, direct_chat, submission

ALICE, BOB = ("alice", 1), ("bob", 1)


def reported(world: World, category: str = "harassment") -> tuple[str, str, list[bytes]]:
    chat = direct_chat(world.server, "alice", "bob")
    items = [chat.send(ALICE, [BOB], t).to(*BOB) for t in ("a", "b")]
    receipt = world.intake.submit(
        submission(BOB, items, category=category, comment="please help"), now_ms=world.now
    )
    messages = next(
        e
        for e in world.evidence_repo.evidence_for_report(receipt.report_id)
        if e.kind == "messages"
    )
    return receipt.case_id, messages.evidence_id, [i.content for i in items]


def test_opening_is_audited_first_and_returns_the_verified_items(world: World) -> None:
    case_id, evidence_id, contents = reported(world)
    reviewer = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    queue = world.cases.queue_for_case(reviewer, case_id)
    opened = world.vault.open(
        evidence_id,
        principal=reviewer,
        queue=queue,
        case_id=case_id,
        purpose="triage",
        now_ms=world.now,
    )
    assert [i.content for i in opened.items()] == contents
    entry = world.audit_repo.rows[opened.audit_seq - 1]
    assert (entry.action, entry.actor, entry.target) == (
        AuditAction.EVIDENCE_VIEW.value,
        reviewer.staff_id,
        f"evidence:{evidence_id}",
    )
    assert "please" not in entry.details and "triage" in entry.details
    assert "please" not in repr(opened) and contents[0].hex() not in repr(opened)


def test_no_audit_means_no_plaintext(world: World) -> None:
    case_id, evidence_id, _ = reported(world)
    reviewer = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    queue = world.cases.queue_for_case(reviewer, case_id)

    def broken(entry: object) -> None:
        raise ConflictError("audit store down")

    world.audit_repo.append = broken  # type: ignore[method-assign]
    with pytest.raises(ConflictError):
        world.vault.open(
            evidence_id,
            principal=reviewer,
            queue=queue,
            case_id=case_id,
            purpose="triage",
            now_ms=world.now,
        )


def test_access_rules(world: World) -> None:
    case_id, evidence_id, _ = reported(world)
    harassment = world.cases.queue(QueueId.HARASSMENT)
    outsider = world.make_staff("otto", Role.REVIEWER, queues=(QueueId.FRAUD_SPAM,))
    legal = world.make_staff("lena", Role.LEGAL, queues=(QueueId.HARASSMENT,))
    reviewer = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    args = {"queue": harassment, "case_id": case_id, "purpose": "p", "now_ms": world.now}
    with pytest.raises(PermissionDeniedError):  # admins never see evidence
        world.vault.open(evidence_id, principal=world.admin, **args)  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError):  # not a member of the case's queue
        world.vault.open(evidence_id, principal=outsider, **args)  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError):  # reviewers view, only legal exports
        world.vault.export(evidence_id, principal=reviewer, **args)  # type: ignore[arg-type]
    exported = world.vault.export(evidence_id, principal=legal, **args)  # type: ignore[arg-type]
    assert world.audit_repo.rows[exported.audit_seq - 1].action == "evidence.export"
    with pytest.raises(SafetyInputError):
        world.vault.open(
            evidence_id,
            principal=reviewer,
            queue=harassment,
            case_id=case_id,
            purpose="  ",
            now_ms=world.now,
        )


def test_child_safety_evidence_needs_the_clearance_and_the_queue(world: World) -> None:
    case_id, evidence_id, _ = reported(world, "child_sexual_exploitation")
    cse = world.cases.queue(QueueId.CHILD_SAFETY)
    cleared = world.make_staff(
        "cleo", Role.REVIEWER, child_safety=True, queues=(QueueId.CHILD_SAFETY,)
    )
    uncleared = world.make_staff("ulf", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    args = {"case_id": case_id, "purpose": "p", "now_ms": world.now}
    with pytest.raises(ChildSafetyPermissionError):
        world.vault.open(evidence_id, principal=uncleared, queue=cse, **args)  # type: ignore[arg-type]
    # Even if a caller passed the wrong queue, the record itself demands the clearance.
    harassment = world.cases.queue(QueueId.HARASSMENT)
    with pytest.raises(ChildSafetyPermissionError):
        world.vault.open(evidence_id, principal=uncleared, queue=harassment, **args)  # type: ignore[arg-type]
    assert world.vault.open(evidence_id, principal=cleared, queue=cse, **args).items()  # type: ignore[arg-type]


def test_blobs_are_bound_to_their_record(world: World) -> None:
    case_id, evidence_id, _ = reported(world)
    reviewer = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    queue = world.cases.queue(QueueId.HARASSMENT)
    other = next(e for e in world.evidence_repo.rows.values() if e.evidence_id != evidence_id)
    mine = world.evidence_repo.rows[evidence_id]
    world.evidence_repo.rows[evidence_id] = dataclasses.replace(
        mine, nonce=other.nonce, ciphertext=other.ciphertext
    )
    with pytest.raises(DecryptionError):
        world.vault.open(
            evidence_id,
            principal=reviewer,
            queue=queue,
            case_id=case_id,
            purpose="p",
            now_ms=world.now,
        )


def test_rotation_reencrypts_everything_and_old_key_can_go(world: World) -> None:
    case_id, evidence_id, contents = reported(world)
    old_ring = world.vault.keys
    old_key = old_ring._keys["ev1"]
    new_key = os.urandom(32)
    world.vault.keys = EvidenceKeyRing({"ev1": old_key, "ev2": new_key}, "ev2")
    before = {k: r.ciphertext for k, r in world.evidence_repo.rows.items()}
    assert world.vault.reencrypt(actor="system", now_ms=world.now) == len(before)
    assert world.vault.reencrypt(actor="system", now_ms=world.now) == 0
    assert {r.key_id for r in world.evidence_repo.rows.values()} == {"ev2"}
    assert all(world.evidence_repo.rows[k].ciphertext != c for k, c in before.items())
    world.vault.keys = EvidenceKeyRing({"ev2": new_key}, "ev2")
    reviewer = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    opened = world.vault.open(
        evidence_id,
        principal=reviewer,
        queue=world.cases.queue(QueueId.HARASSMENT),
        case_id=case_id,
        purpose="p",
        now_ms=world.now,
    )
    assert [i.content for i in opened.items()] == contents
    assert "ev2" in repr(world.vault.keys) and new_key.hex() not in repr(world.vault.keys)
    world.vault.keys = EvidenceKeyRing({"ev3": os.urandom(32)}, "ev3")
    with pytest.raises(UnknownKeyIdError):
        world.vault.open(
            evidence_id,
            principal=reviewer,
            queue=world.cases.queue(QueueId.HARASSMENT),
            case_id=case_id,
            purpose="p",
            now_ms=world.now,
        )


def test_retention_holds_and_purge(world: World) -> None:
    case_id, evidence_id, _ = reported(world)
    reviewer = world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,))
    queue = world.cases.queue(QueueId.HARASSMENT)
    record = world.evidence_repo.rows[evidence_id]
    assert record.expires_ms == world.now + 365 * DAY_MS
    later = record.expires_ms + 1
    with pytest.raises(EvidenceExpiredError):
        world.vault.open(
            evidence_id, principal=reviewer, queue=queue, case_id=case_id, purpose="p", now_ms=later
        )
    world.vault.place_hold(
        [evidence_id], until_ms=later + DAY_MS, actor="legal", reason="referral", now_ms=world.now
    )
    world.vault.open(
        evidence_id, principal=reviewer, queue=queue, case_id=case_id, purpose="p", now_ms=later
    )
    assert world.vault.purge_expired(now_ms=later) == 1  # the comment record, not on hold
    assert evidence_id in world.evidence_repo.rows
    assert world.vault.purge_expired(now_ms=later + DAY_MS) == 1
    assert not world.evidence_repo.rows


def test_key_ring_validation() -> None:
    with pytest.raises(Exception, match="32 bytes"):
        EvidenceKeyRing({"k": b"short"}, "k")
    with pytest.raises(Exception, match="active"):
        EvidenceKeyRing({"k": os.urandom(32)}, "other")
