"""Reported attachments matched in the clear against the hash banks (issue 10): after their
franking verification, every revealed attachment is hashed (PDQ over the 8 dihedral hashes,
MD5, SHA-256) and matched against EVERY active bank entry — single-source ones included — and
a match is stored with the report, shown on the case and routes it to child safety; on the
in-memory repositories, SQLite and PostgreSQL, with real photographs (scikit-image's bundled
files) and real banks."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from tests.safety.conftest import (
    NEW_KEY,
    OLD_KEY,
    ROTATED_AT,
    T0,
    Chat,
    Server,
    direct_chat,
    submission,
)
from tests.safety.test_detection import LISTED, UNLISTED, edited, original, pdq_hex
from tidings.media.pdq import dihedral_hashes
from tidings.safety.audit import AuditAction
from tidings.safety.bank_match import BankIndex, BankMatcher, bank_hash_source
from tidings.safety.categories import Category, QueueId
from tidings.safety.evidence import EvidenceKeyRing
from tidings.safety.reports import (
    AttachmentReveal,
    FrankingKey,
    FrankingKeyRing,
    ReportMatch,
    ReportReceipt,
)
from tidings.safety.service import SafetyRepositories, SafetyService
from tidings.safety.sql import SafetyDatabase
from tidings.safety.staff import Principal, Role, permissions_for

NOW = T0 + 10_000_000
REVIEWER = Principal(
    staff_id="staff_cs",
    username="cs",
    roles=frozenset({Role.REVIEWER}),
    permissions=permissions_for({Role.REVIEWER}, child_safety=True),
    queues=frozenset({QueueId.CHILD_SAFETY.value, QueueId.FRAUD_SPAM.value}),
)
LISTED_FILE = b"%PDF-1.4 a listed document, not an image\n" + bytes(range(256))
"""A non-image attachment whose SHA-256 a bank lists."""


def rotated(name: str) -> bytes:
    """The edited copy of ``name`` turned by 90 degrees (PNG)."""
    image = Image.open(io.BytesIO(edited(name))).transpose(Image.Transpose.ROTATE_90)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@dataclass
class Env:
    safety: SafetyService
    server: Server
    chat: Chat

    def report(
        self,
        plaintext: bytes,
        *,
        content_type: str = "image/png",
        category: str = "spam",
        reporter: str = "bob",
        sender: str = "mallory",
    ) -> ReportReceipt:
        """``sender`` sends ``plaintext`` to ``reporter``, who reports it revealing its key."""
        chat = self.chat if (sender, reporter) == ("mallory", "bob") else None
        chat = chat or direct_chat(self.server, sender, reporter)
        pointer, key = chat.upload(plaintext, content_type=content_type)
        sent = chat.send((sender, 1), [(reporter, 1)], "look", attachments=(pointer,))
        return self.safety.submit_report(
            submission(
                (reporter, 1),
                [sent.to(reporter)],
                category=category,
                attachments=(AttachmentReveal(0, 0, key),),
            )
        )

    def matches(self, receipt: ReportReceipt) -> list[ReportMatch]:
        return self.safety.report_repo.matches_for_report(receipt.report_id)

    def audit(self, action: AuditAction) -> list[Any]:
        entries = self.safety.audit_repo.entries()
        return [e for e in entries if e.action == action.value]


def make_env(db: SafetyDatabase | None) -> Env:
    server = Server()
    keys: dict[str, Any] = {
        "franking_keys": FrankingKeyRing(
            [FrankingKey("f1", OLD_KEY, T0 - 1, ROTATED_AT), FrankingKey("f2", NEW_KEY, ROTATED_AT)]
        ),
        "evidence_keys": EvidenceKeyRing({"ev1": os.urandom(32)}, "ev1"),
        "fetcher": server,
        "clock": lambda: NOW,
    }
    if db is not None:
        safety = SafetyService.open(db.url, schema=db.schema, **keys)
    else:
        repos = SafetyRepositories.in_memory()
        safety = SafetyService(repos, **keys)
    operator = safety.operator()
    safety.banks.create_bank(operator, name="cse", category=Category.CHILD_SEXUAL_EXPLOITATION)
    # One source only: never on the device list, yet matched for reports.
    rows = "".join(f"pdq,{pdq_hex(n)}\n" for n in LISTED)
    rows += f"sha256,{hashlib.sha256(LISTED_FILE).hexdigest()}\n"
    safety.banks.import_file(
        operator, "cse", rows.encode(), organisation="NCMEC", jurisdiction="US"
    )
    return Env(safety, server, direct_chat(server, "mallory", "bob"))


@pytest.fixture
def env(safety_db: SafetyDatabase | None) -> Iterator[Env]:
    world = make_env(safety_db)
    yield world
    world.safety.close()


def test_a_reported_listed_image_routes_to_child_safety_with_the_match(env: Env) -> None:
    receipt = env.report(edited("astronaut"), category="spam")
    case = env.safety.case_repo.get_case(receipt.case_id)
    assert case is not None
    assert case.queue_id == QueueId.CHILD_SAFETY.value
    assert case.category is Category.CHILD_SEXUAL_EXPLOITATION
    report = env.safety.report_repo.get_report(receipt.report_id)
    assert report is not None and report.category is Category.SPAM  # what the reporter chose

    (match,) = env.matches(receipt)
    assert (match.item_index, match.attachment_index) == (0, 0)
    assert match.sha256 == hashlib.sha256(edited("astronaut")).digest()
    assert match.pdq == dihedral_hashes(edited("astronaut"))[0].bits
    (entry,) = match.entries
    assert entry.bank == "cse" and entry.signal_type == "pdq"
    assert 0 < entry.distance <= 31 and match.distance == entry.distance
    assert entry.sources == (("NCMEC", "US"),)
    listed = {e.value for e in env.safety.banks.active_entries("pdq")}
    assert pdq_hex("astronaut") in listed

    # The evidence is child-safety evidence; the match is audited by "system".
    records = env.safety.vault.records_for_report(receipt.report_id)
    assert records and all(r.child_safety for r in records)
    (audited,) = env.audit(AuditAction.REPORT_MATCH)
    assert audited.actor == "system" and audited.target == f"report:{receipt.report_id}"
    details: Any = audited.details_obj
    hit = details["matches"][0]["entries"][0]
    assert hit["bank"] == "cse" and hit["entry"] == entry.entry_id and hit["signal"] == "pdq"
    assert details["case"] == receipt.case_id

    # The case view carries the match.
    view = env.safety.cases.view_case(REVIEWER, receipt.case_id, now_ms=NOW)
    (report_view,) = view.reports
    assert report_view.matches == (match,)


def test_a_rotated_copy_matches(env: Env) -> None:
    receipt = env.report(rotated("coffee"))
    (match,) = env.matches(receipt)
    assert match.entries[0].distance <= 31
    # Not by its own orientation: only a turned hash of it is near the listed one.
    listed = dihedral_hashes(original("coffee"))[0]
    assert dihedral_hashes(rotated("coffee"))[0].distance(listed) > 31
    case = env.safety.case_repo.get_case(receipt.case_id)
    assert case is not None and case.queue_id == QueueId.CHILD_SAFETY.value


def test_an_unlisted_image_does_not_match(env: Env) -> None:
    receipt = env.report(edited(UNLISTED[0]))
    assert env.matches(receipt) == []
    case = env.safety.case_repo.get_case(receipt.case_id)
    assert case is not None and case.queue_id == QueueId.FRAUD_SPAM.value
    assert case.category is Category.SPAM
    assert env.audit(AuditAction.REPORT_MATCH) == []
    records = env.safety.vault.records_for_report(receipt.report_id)
    assert not any(r.child_safety for r in records)


def test_a_non_image_matches_by_sha256_only_when_listed(env: Env) -> None:
    receipt = env.report(LISTED_FILE, content_type="application/pdf")
    (match,) = env.matches(receipt)
    assert match.pdq is None and match.distance == 0
    (entry,) = match.entries
    assert entry.signal_type == "sha256" and entry.exact and entry.distance == 0
    case = env.safety.case_repo.get_case(receipt.case_id)
    assert case is not None and case.queue_id == QueueId.CHILD_SAFETY.value

    other = env.report(LISTED_FILE + b"!", content_type="application/pdf", reporter="carol")
    assert env.matches(other) == []


def test_a_removed_entry_no_longer_matches(env: Env) -> None:
    assert env.matches(env.report(edited("chelsea")))  # listed: matches
    env.safety.banks.remove_values(
        env.safety.operator(), "cse", [pdq_hex("chelsea")], organisation="NCMEC"
    )
    receipt = env.report(edited("chelsea"), reporter="carol")
    assert env.matches(receipt) == []
    assert env.matches(env.report(edited("rocket"), reporter="dave"))  # the others still do


def test_a_matching_report_moves_the_subjects_open_case_into_child_safety(env: Env) -> None:
    first = env.report(edited(UNLISTED[1]), category="spam")
    case = env.safety.case_repo.get_case(first.case_id)
    assert case is not None and case.queue_id == QueueId.FRAUD_SPAM.value
    second = env.report(edited("astronaut"), category="spam", reporter="carol")
    assert second.case_id == first.case_id
    case = env.safety.case_repo.get_case(first.case_id)
    assert case is not None and case.queue_id == QueueId.CHILD_SAFETY.value
    assert case.category is Category.CHILD_SEXUAL_EXPLOITATION and case.report_count == 2


def test_the_index_is_built_once_per_list_version(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[int] = []
    real = BankIndex.__init__

    def counting(self: BankIndex, listed: Any, version: int = 0) -> None:
        builds.append(version)
        real(self, listed, version)

    monkeypatch.setattr(BankIndex, "__init__", counting)
    env.report(edited("astronaut"))
    env.report(edited("coffee"), reporter="carol")
    assert len(builds) == 1
    env.safety.banks.import_file(
        env.safety.operator(),
        "cse",
        f"pdq,{pdq_hex('camera')}\n".encode(),
        organisation="NCMEC",
        jurisdiction="US",
    )
    receipt = env.report(edited("camera"), reporter="dave")
    assert len(builds) == 2 and builds[1] > builds[0]
    assert env.matches(receipt)  # the new entry matches at once


def test_detection_confirms_against_the_device_list_of_the_same_index(env: Env) -> None:
    """The index reports use is the one detection confirms with (`device_only`): an entry
    from one jurisdiction matches a report but never confirms a detection."""
    matcher: BankMatcher = env.safety.bank_matcher
    hashes = dihedral_hashes(edited("astronaut"))
    assert matcher.index().match_pdq(hashes)
    assert matcher.index().match_pdq(hashes, device_only=True) == ()
    env.safety.banks.import_file(
        env.safety.operator(),
        "cse",
        f"pdq,{pdq_hex('astronaut')}\n".encode(),
        organisation="IWF",
        jurisdiction="GB",
    )
    (entry,) = matcher.index().match_pdq(hashes, device_only=True)
    assert {o for o, _ in entry.sources} == {"NCMEC", "IWF"}
    device = BankMatcher(bank_hash_source(env.safety.banks, device_only=True))
    assert [e.entry_id for e in device.index().match_pdq(hashes)] == [entry.entry_id]
