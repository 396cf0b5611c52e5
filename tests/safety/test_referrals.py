"""Referrals (issue 11): a confirmed child-exploitation case becomes exactly one finished
CyberTipline report at the local server, with the case's real files, their MD5, and
"viewed by the provider" flags taken from the audit log; two people; a crash resumes without a
duplicate; the evidence is held a year; retraction; refusals change nothing. In memory, on
SQLite and on PostgreSQL (the `world` fixture)."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from tests.support.cybertip_server import CyberTiplineServer
from tidings import errors as e
from tidings.clock import DAY_MS
from tidings.media.pdq import hash_image
from tidings.safety.audit import AuditAction
from tidings.safety.case_model import CaseState, DecisionKind
from tidings.safety.categories import QueueId
from tidings.safety.cybertip_client import ReferralConfig, ReferralState
from tidings.safety.detection_model import DetectionMatch, InMemoryDetectionRepository
from tidings.safety.referral_model import ContactPerson, Email, Reporter
from tidings.safety.referral_records import (
    Approval,
    InMemoryReferralRepository,
    ReferralRecord,
    ReferralRepository,
)
from tidings.safety.referrals import (
    ENV_CONTACT_EMAIL,
    REFERRAL_HOLD_MS,
    ReferralPolicy,
    ReferralService,
    load_referrals,
)
from tidings.safety.reports import AttachmentReveal
from tidings.safety.sql import SafetyDatabase, SqlDetectionRepository, SqlReferralRepository
from tidings.safety.staff import Principal, Role

from .conftest import World, direct_chat, submission

REPORTER = Reporter(
    ContactPerson("Safety", "Team", (Email("safety@tidings.example", True),)),
    legal_url="https://tidings.example/legal",
)


def image(seed: int) -> bytes:
    """A PNG made here (a gradient pattern), so PDQ has something to hash."""
    picture = Image.new("RGB", (64, 64))
    picture.putdata(
        [((x * seed) % 256, (y * 3 + seed) % 256, (x ^ y) % 256)
         for y in range(64) for x in range(64)]
    )
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def server() -> Iterator[CyberTiplineServer]:
    srv = CyberTiplineServer().start()
    srv.hang_s = 1.0
    try:
        yield srv
    finally:
        srv.stop()


def config_for(server: CyberTiplineServer) -> ReferralConfig:
    return ReferralConfig(
        url=server.url,
        username=server.username,
        password=server.password,
        timeout_s=0.5,
        max_attempts=2,
        backoff_s=0.0,
        max_backoff_s=0.0,
    )


class Crashing:
    """A repository that "crashes" (raises) right after storing the n-th matching update."""

    def __init__(self, inner: ReferralRepository) -> None:
        self.inner = inner
        self.crash_after: tuple[str, str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_referral(self, record: ReferralRecord, expected_version: int) -> None:
        self.inner.update_referral(record, expected_version)
        steps = record.step_list()
        last = (steps[-1]["step"], steps[-1]["outcome"]) if steps else None
        if self.crash_after and last == self.crash_after:
            self.crash_after = None
            raise RuntimeError("the node died here")


@dataclass
class Loop:
    world: World
    service: ReferralService
    repo: Crashing
    staff: dict[str, Principal]
    referred: list[tuple[str, int, str]] = field(default_factory=list)
    detection: Any = None

    def audit_actions(self) -> list[str]:
        return [r.action for r in self.world.audit_repo.rows]


@pytest.fixture
def loop(world: World, safety_db: SafetyDatabase | None, server: CyberTiplineServer) -> Loop:
    inner: ReferralRepository = (
        InMemoryReferralRepository() if safety_db is None else SqlReferralRepository(safety_db)
    )
    repo = Crashing(inner)
    cse = (QueueId.CHILD_SAFETY,)
    staff = {
        "cleo": world.make_staff("cleo", Role.REVIEWER, child_safety=True, queues=cse),
        "lena": world.make_staff("lena", Role.LEAD, child_safety=True, queues=cse),
        "lou": world.make_staff(
            "lou", Role.LEGAL, child_safety=True, queues=(*cse, QueueId.HARASSMENT)
        ),
        "liz": world.make_staff("liz", Role.LEGAL, child_safety=True, queues=cse),
        "rita": world.make_staff("rita", Role.REVIEWER, queues=(QueueId.HARASSMENT,)),
        "lee": world.make_staff("lee", Role.LEAD, queues=(QueueId.HARASSMENT,)),
    }
    result = Loop(world, None, repo, staff)  # type: ignore[arg-type]
    result.detection = (
        InMemoryDetectionRepository(world.evidence_repo)
        if safety_db is None
        else SqlDetectionRepository(safety_db)
    )
    result.service = ReferralService(
        detection=result.detection,
        repository=repo,  # type: ignore[arg-type]
        cases=world.case_repo,
        reports=world.report_repo,
        vault=world.vault,
        audit=world.audit,
        audit_repo=world.audit_repo,
        queue_for=world.cases.queue_for_case,
        is_staff=lambda actor: world.staff_repo.get_staff(actor) is not None,
        reporter=REPORTER,
        config=config_for(server),
        clock=lambda: world.now,
        on_referred=lambda account, case_id, until: result.referred.append(
            (account, until, case_id)
        ),
    )
    return result


def cse_case(
    loop: Loop, subject: str = "mallory", *, confirm: bool = True
) -> tuple[str, list[str]]:
    """A report with two attachments about ``subject``; the reviewer views the first one;
    two reviewers confirm ESCALATE_REFERRAL (the case is then REFERRED)."""
    world = loop.world
    chat = direct_chat(world.server, subject, "bob")
    pointers = [chat.upload(image(seed)) for seed in (3, 7)]
    item = chat.send(
        (subject, 2), [("bob", 1)], "x", attachments=tuple(p for p, _ in pointers)
    ).to("bob", 1)
    reveals = tuple(AttachmentReveal(0, i, key) for i, (_, key) in enumerate(pointers))
    sub = submission(
        ("bob", 1), [item], category="child_sexual_exploitation", attachments=reveals
    )
    receipt = world.intake.submit(sub, now_ms=world.now)
    evidence = sorted(
        (r for r in world.evidence_repo.evidence_for_report(receipt.report_id)
         if r.kind.startswith("attachment:")),
        key=lambda r: r.kind,
    )
    cleo, lena = loop.staff["cleo"], loop.staff["lena"]
    queue = world.cases.queue_for_case(cleo, receipt.case_id)
    world.vault.open(
        evidence[0].evidence_id, principal=cleo, queue=queue, case_id=receipt.case_id,
        purpose="review", now_ms=world.now,
    )
    if confirm:
        world.cases.claim(cleo, receipt.case_id, now_ms=world.now)
        world.cases.decide(
            cleo, receipt.case_id, kind=DecisionKind.ESCALATE_REFERRAL, policy_id="CSE-1",
            reason="known material", now_ms=world.now,
        )
        world.cases.claim(lena, receipt.case_id, now_ms=world.now)
        world.cases.confirm(lena, receipt.case_id, reason="agree", now_ms=world.now)
    return receipt.case_id, [r.evidence_id for r in evidence]


def details_of(server: CyberTiplineServer) -> dict[str, ET.Element]:
    (report,) = server.finished()
    return {
        f.name: ET.fromstring(f.details) for f in report.files.values() if f.details is not None
    }


def test_the_whole_loop(loop: Loop, server: CyberTiplineServer) -> None:
    world, s = loop.world, loop.staff
    case_id, evidence = cse_case(loop)
    case = world.case_repo.get_case(case_id)
    assert case is not None and case.state is CaseState.REFERRED

    record = loop.service.prepare(s["lou"], case_id)
    assert record.approval is Approval.DRAFT and record.state is ReferralState.PENDING
    referral = record.referral()
    assert referral.reported_person is not None
    assert referral.reported_person.esp_identifier == "mallory"
    assert [d.id_value for d in referral.reported_person.device_ids] == ["mallory/2"]
    assert [f.file_key for f in referral.files] == evidence
    # Viewed truthfully: the reviewer opened the first file only (the preparer's export for
    # the hashes is not a view).
    assert [f.viewed_by_provider for f in referral.files] == [True, False]
    assert not any(f.publicly_available for f in referral.files)
    assert referral.files[0].pdq == hash_image(image(3)).bits
    assert referral.files[0].md5 == hashlib.md5(image(3)).digest()
    assert "PNG" not in record.document  # hashes and names only, never the bytes

    with pytest.raises(e.ReferralStateError):  # not yet approved
        loop.service.submit(s["lou"], record.referral_id)
    with pytest.raises(e.SameReviewerError):
        loop.service.approve(s["lou"], record.referral_id)
    with pytest.raises(e.PermissionDeniedError):
        loop.service.approve(s["cleo"], record.referral_id)  # a reviewer
    assert server.opened == 0
    approved = loop.service.approve(s["liz"], record.referral_id)
    assert approved.approved_by == s["liz"].staff_id

    done = loop.service.submit(s["lou"], record.referral_id)
    assert done.state is ReferralState.FINISHED and done.report_id is not None
    assert server.opened == 1 and len(server.finished()) == 1
    (report,) = server.finished()
    assert report.report_id == done.report_id
    stored = {hashlib.md5(f.data).digest() for f in report.files.values()}
    assert stored == {f.md5 for f in referral.files}
    viewed = {
        name: el.findtext("fileViewedByEsp") for name, el in details_of(server).items()
    }
    assert viewed == {referral.files[0].file_name: "true", referral.files[1].file_name: "false"}

    # One year of preservation on every file, and the account hook.
    for evidence_id in evidence:
        held = world.evidence_repo.get_evidence(evidence_id)
        assert held is not None and held.hold_until_ms == world.now + REFERRAL_HOLD_MS
    assert REFERRAL_HOLD_MS == 365 * DAY_MS
    assert loop.referred == [("mallory", world.now + REFERRAL_HOLD_MS, case_id)]
    stored_record = loop.repo.get_referral(record.referral_id)
    assert stored_record is not None and stored_record.hold_until_ms == world.now + REFERRAL_HOLD_MS
    steps = [(x["step"], x["outcome"]) for x in stored_record.step_list()]
    assert steps[0] == ("submit", "sending") and steps[-1] == ("finish", "ok")
    actions = loop.audit_actions()
    for action in (AuditAction.REFERRAL_PREPARE, AuditAction.REFERRAL_APPROVE,
                   AuditAction.REFERRAL_SUBMIT_STEP, AuditAction.REFERRAL_SUBMITTED,
                   AuditAction.EVIDENCE_HOLD, AuditAction.EVIDENCE_EXPORT):
        assert action.value in actions, action
    submitted = [r for r in world.audit_repo.rows if r.action == "referral.submitted"]
    assert submitted[0].actor == s["lou"].staff_id
    assert done.report_id in submitted[0].details
    assert world.audit.verify().ok

    # Submitting again sends nothing.
    loop.service.submit(s["lou"], record.referral_id)
    assert server.opened == 1 and server.requests.count("submit") == 1


def test_a_crash_mid_submit_resumes_without_a_duplicate(
    loop: Loop, server: CyberTiplineServer
) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    loop.service.approve(s["lena"], record.referral_id)  # a lead may approve too
    loop.repo.crash_after = ("upload", "ok")
    with pytest.raises(RuntimeError):
        loop.service.submit(s["lou"], record.referral_id)
    halfway = loop.repo.get_referral(record.referral_id)
    assert halfway is not None and halfway.state is ReferralState.OPEN
    assert server.opened == 1 and not server.finished()

    done = loop.service.submit(s["lou"], record.referral_id)
    assert done.state is ReferralState.FINISHED
    assert server.opened == 1 and len(server.finished()) == 1
    assert server.requests.count("submit") == 1
    (report,) = server.finished()
    # The file whose upload was stored before the crash was not uploaded again.
    assert len(report.files) == 2 and len(details_of(server)) == 2


def test_a_failing_clearinghouse_leaves_a_resumable_record(
    loop: Loop, server: CyberTiplineServer
) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    loop.service.approve(s["liz"], record.referral_id)
    server.fail("finish", "http_500", "http_500")
    with pytest.raises(e.ClearinghouseUnavailableError):
        loop.service.submit(s["lou"], record.referral_id)
    stuck = loop.repo.get_referral(record.referral_id)
    assert stuck is not None and stuck.state is ReferralState.OPEN and stuck.hold_until_ms is None
    assert loop.referred == []
    assert loop.service.submit(s["lou"], record.referral_id).state is ReferralState.FINISHED
    assert server.opened == 1 and len(server.finished()) == 1


def test_retraction_by_legal_only(loop: Loop, server: CyberTiplineServer) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    loop.service.approve(s["liz"], record.referral_id)
    server.fail("finish", "http_500", "http_500")
    with pytest.raises(e.ClearinghouseUnavailableError):
        loop.service.submit(s["lou"], record.referral_id)
    with pytest.raises(e.PermissionDeniedError):
        loop.service.retract(s["lena"], record.referral_id, reason="duplicate")
    retracted = loop.service.retract(s["liz"], record.referral_id, reason="sent in error")
    assert retracted.state is ReferralState.RETRACTED
    assert retracted.retracted_by == s["liz"].staff_id
    (report,) = server.reports.values()
    assert report.retracted and not report.finished
    entry = [r for r in loop.world.audit_repo.rows if r.action == "referral.retract"][-1]
    assert entry.actor == s["liz"].staff_id
    with pytest.raises(e.ReferralStateError):
        loop.service.submit(s["lou"], record.referral_id)
    with pytest.raises(e.ReferralStateError):
        loop.service.retract(s["liz"], record.referral_id, reason="again")

    # A retracted referral lets the case be prepared again; one never sent is withdrawn here.
    again = loop.service.prepare(s["lou"], case_id)
    assert again.seq == 2
    withdrawn = loop.service.retract(s["lou"], again.referral_id, reason="wrong files")
    assert withdrawn.state is ReferralState.RETRACTED and server.opened == 1


def test_a_lost_submit_answer_is_reopened_by_legal(
    loop: Loop, server: CyberTiplineServer
) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    loop.service.approve(s["liz"], record.referral_id)
    server.fail("submit", "drop")
    with pytest.raises(e.ReferralSubmitUncertainError):
        loop.service.submit(s["lou"], record.referral_id)
    with pytest.raises(e.ReferralSubmitUncertainError):
        loop.service.submit(s["lou"], record.referral_id)
    assert server.requests.count("submit") == 1
    with pytest.raises(e.PermissionDeniedError):
        loop.service.reopen(s["lena"], record.referral_id, reason="checked with NCMEC")
    reopened = loop.service.reopen(s["lou"], record.referral_id, reason="checked with NCMEC")
    assert reopened.state is ReferralState.PENDING
    assert "referral.reopen" in loop.audit_actions()
    assert loop.service.submit(s["lou"], record.referral_id).state is ReferralState.FINISHED
    assert len(server.finished()) == 1


def test_refusals_are_typed_and_change_nothing(loop: Loop, server: CyberTiplineServer) -> None:
    world, s = loop.world, loop.staff
    open_case, _ = cse_case(loop, "oscar", confirm=False)
    # A harassment case confirmed for referral (a reviewer's mistake) is not NCMEC's.
    chat = direct_chat(world.server, "hal", "bob")
    item = chat.send(("hal", 1), [("bob", 1)], "threat").to("bob", 1)
    harassment = world.submit(submission(("bob", 1), [item]))
    world.cases.claim(s["rita"], harassment, now_ms=world.now)
    world.cases.decide(s["rita"], harassment, kind=DecisionKind.ESCALATE_REFERRAL,
                       policy_id="HAR-1", reason="r", now_ms=world.now)
    world.cases.claim(s["lee"], harassment, now_ms=world.now)
    world.cases.confirm(s["lee"], harassment, reason="r", now_ms=world.now)
    referred, _ = cse_case(loop)
    before = len(world.audit_repo.rows)

    with pytest.raises(e.InvalidCaseStateError):
        loop.service.prepare(s["lou"], open_case)
    with pytest.raises(e.InvalidReferralError):
        loop.service.prepare(s["lou"], harassment)
    with pytest.raises(e.PermissionDeniedError):
        loop.service.prepare(s["cleo"], referred)  # a reviewer
    with pytest.raises(e.PermissionDeniedError):
        loop.service.prepare(s["lena"], referred)  # a lead approves, legal prepares
    with pytest.raises(e.NotFoundError):
        loop.service.prepare(s["lou"], "no-such-case")
    with pytest.raises(e.NotFoundError):
        loop.service.approve(s["liz"], "no-such-referral")
    assert loop.repo.list_referrals(limit=10) == []
    assert len(world.audit_repo.rows) == before
    assert server.opened == 0

    record = loop.service.prepare(s["lou"], referred)
    with pytest.raises(e.ReferralStateError):
        loop.service.prepare(s["liz"], referred)  # one live referral per case
    loop.service.approve(s["liz"], record.referral_id)
    with pytest.raises(e.ReferralStateError):
        loop.service.approve(s["lena"], record.referral_id)
    with pytest.raises(e.PermissionDeniedError):
        loop.service.submit(s["lena"], record.referral_id)
    unchanged = loop.repo.get_referral(record.referral_id)
    assert unchanged is not None and unchanged.state is ReferralState.PENDING
    assert server.opened == 0


def test_without_two_person_approval_and_without_configuration(
    loop: Loop, server: CyberTiplineServer
) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    loop.service.config = None
    loop.service.policy = ReferralPolicy(two_person=False)
    with pytest.raises(e.ReferralConfigError):
        loop.service.submit(s["lou"], record.referral_id)
    loop.service.config = config_for(server)
    assert loop.service.submit(s["lou"], record.referral_id).state is ReferralState.FINISHED


def test_listing_and_viewing_are_audited(loop: Loop) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    assert [r.referral_id for r in loop.service.list_referrals(s["lena"])] == [record.referral_id]
    view = loop.service.view(s["liz"], record.referral_id).to_json()
    assert view["reported_account"] == "mallory" and len(view["file_list"]) == 2
    assert [f["viewed_by_provider"] for f in view["file_list"]] == [True, False]
    with pytest.raises(e.PermissionDeniedError):
        loop.service.list_referrals(s["cleo"])
    with pytest.raises(e.ChildSafetyPermissionError):
        loop.service.view(s["lee"], record.referral_id)
    actions = loop.audit_actions()
    assert "referral.list" in actions and "referral.view" in actions


def test_an_overturned_case_is_never_sent(loop: Loop, server: CyberTiplineServer) -> None:
    world, s = loop.world, loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    case = world.case_repo.get_case(case_id)
    assert case is not None and case.final_decision_id is not None
    # The account appeals the ban: the duty to report stands while the appeal is open.
    appeal = world.cases.file_appeal(
        "mallory", case.final_decision_id, statement="not me", now_ms=world.now
    )
    loop.service.approve(s["liz"], record.referral_id)
    cora = world.make_staff("cora", Role.REVIEWER, child_safety=True,
                            queues=(QueueId.CHILD_SAFETY,))
    world.cases.claim(cora, case_id, now_ms=world.now)
    world.cases.decide_appeal(cora, appeal.appeal_id, overturn=True, reason="misread",
                              now_ms=world.now)
    with pytest.raises(e.InvalidCaseStateError):
        loop.service.submit(s["lou"], record.referral_id)
    assert server.opened == 0
    stored = loop.repo.get_referral(record.referral_id)
    assert stored is not None and stored.state is ReferralState.PENDING


def test_the_configuration_and_the_provider_contact() -> None:
    table: dict[str, object] = {
        "url": "https://exttest.cybertip.org/ispws",
        "username": "esp",
        "password": "secret-pw",
        "reporter": {"email": "safety@tidings.example", "legal_url": "https://t.example/l"},
    }
    config, reporter = load_referrals(table, env={})
    assert config is not None and config.base_url == "https://exttest.cybertip.org/ispws"
    assert reporter is not None and reporter.legal_url == "https://t.example/l"
    assert reporter.reporting_person.emails[0].address == "safety@tidings.example"
    _, override = load_referrals(table, env={ENV_CONTACT_EMAIL: "cyber@tidings.example"})
    assert override is not None
    assert override.reporting_person.emails[0].address == "cyber@tidings.example"
    assert load_referrals(None, env={}) == (None, None)
    with pytest.raises(e.ReferralConfigError):
        load_referrals({**table, "reporter": {"mail": "x"}}, env={})
    with pytest.raises(e.ReferralConfigError):
        load_referrals({**table, "reporter": {"email": "not an address"}}, env={})


def test_a_detection_case_reports_its_matched_images(
    loop: Loop, server: CyberTiplineServer
) -> None:
    world, s = loop.world, loop.staff
    case_id = world.cases.attach_detection("dora", now_ms=world.now)
    picture = image(11)
    evidence = world.vault.seal(
        evidence_id="ev_detected", report_id="dm_1", kind="detection_image",
        plaintext=picture, child_safety=True, now_ms=world.now,
    )
    pdq = hash_image(picture).bits
    loop.detection.store_match(
        DetectionMatch(
            match_id="dm_1", case_id=case_id, opened_id="op_1", account="dora", device_id=3,
            evidence_id="ev_detected", attachment_id="att_1", content_type="image/png",
            message_id=bytes(16), device_pdq=pdq, server_pdq=pdq, distance=0, entries=(),
            matched_ms=world.now - 5_000,
        ),
        evidence,
    )
    world.cases.claim(s["cleo"], case_id, now_ms=world.now)
    world.cases.decide(s["cleo"], case_id, kind=DecisionKind.ESCALATE_REFERRAL,
                       policy_id="CSE-1", reason="listed image", now_ms=world.now)
    world.cases.claim(s["lena"], case_id, now_ms=world.now)
    world.cases.confirm(s["lena"], case_id, reason="agree", now_ms=world.now)

    record = loop.service.prepare(s["lou"], case_id)
    referral = record.referral()
    (only,) = referral.files
    assert only.file_key == "ev_detected" and only.file_name == "ev_detected.png"
    assert only.pdq == pdq and not only.viewed_by_provider  # nobody opened it
    assert referral.summary.incident_ms == world.now - 5_000
    assert referral.reported_person is not None
    assert [d.id_value for d in referral.reported_person.device_ids] == ["dora/3"]
    assert referral.additional_info is not None and "detection" in referral.additional_info
    loop.service.approve(s["liz"], record.referral_id)
    loop.service.submit(s["lou"], record.referral_id)
    (report,) = server.finished()
    assert [f.data for f in report.files.values()] == [picture]
    held = world.evidence_repo.get_evidence("ev_detected")
    assert held is not None and held.hold_until_ms == world.now + REFERRAL_HOLD_MS


def test_a_failing_account_hold_hook_is_retried_and_never_recorded_as_done(
    loop: Loop, server: CyberTiplineServer
) -> None:
    s = loop.staff
    case_id, _ = cse_case(loop)
    record = loop.service.prepare(s["lou"], case_id)
    loop.service.approve(s["liz"], record.referral_id)
    calls: list[str] = []

    def flaky(account: str, case: str, until: int) -> None:
        calls.append(account)
        if len(calls) == 1:
            raise RuntimeError("the account store is down")

    loop.service.on_referred = flaky
    with pytest.raises(RuntimeError):
        loop.service.submit(s["lou"], record.referral_id)
    stored = loop.repo.get_referral(record.referral_id)
    assert stored is not None and stored.state is ReferralState.FINISHED
    assert stored.hold_until_ms is None
    done = loop.service.submit(s["lou"], record.referral_id)
    assert done.hold_until_ms is not None and calls == ["mallory", "mallory"]
    assert server.opened == 1 and server.requests.count("submit") == 1
    assert loop.audit_actions().count("referral.submitted") == 1
