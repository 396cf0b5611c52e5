"""Cases: grouping and priority, routing (CSE fast path), locks, SLAs, decisions, second
review, appeals, voiding a bad-faith reporter, enforcement."""

from __future__ import annotations

import pytest

from tidings.errors import (
    CaseLockedError,
    ChildSafetyPermissionError,
    InvalidCaseStateError,
    InvalidDecisionError,
    PermissionDeniedError,
    SafetyInputError,
    SameReviewerError,
)
from tidings.safety.cases import (
    CaseSource,
    CaseState,
    DecisionKind,
    DecisionStatus,
    EnforcementKind,
    duplicate_boost,
    lock_remaining_ms,
)
from tidings.safety.categories import (
    HOUR_MS,
    Category,
    ConversationKind,
    QueueId,
    Router,
    RoutingInput,
    RoutingRule,
)
from tidings.safety.staff import Principal, Role

from .conftest import World, direct_chat, group_chat, submission

ALICE = ("alice", 1)
MIN = 60_000


def report(
    world: World, reporter: str, subject: str = "alice", category: str = "harassment", n: int = 1
) -> str:
    chat = direct_chat(world.server, subject, reporter)
    items = [chat.send((subject, 1), [(reporter, 1)], f"m{i}").to(reporter, 1) for i in range(n)]
    return world.submit(submission((reporter, 1), items, category=category))


@pytest.fixture
def staff(world: World) -> dict[str, Principal]:
    queues = (QueueId.HARASSMENT, QueueId.VIOLENCE)
    return {
        "rita": world.make_staff("rita", Role.REVIEWER, queues=queues),
        "rob": world.make_staff("rob", Role.REVIEWER, queues=queues),
        "lee": world.make_staff("lee", Role.LEAD, queues=queues),
        "cleo": world.make_staff(
            "cleo", Role.REVIEWER, child_safety=True, queues=(QueueId.CHILD_SAFETY,)
        ),
        "cara": world.make_staff(
            "cara", Role.LEAD, child_safety=True, queues=(QueueId.CHILD_SAFETY,)
        ),
    }


def test_reports_about_one_account_group_into_one_case_and_raise_priority(world: World) -> None:
    first = report(world, "bob")
    case = world.case_repo.get_case(first)
    assert case is not None and case.priority == 500 and case.report_count == 1
    assert report(world, "carol") == first
    assert report(world, "dave") == first
    chat = direct_chat(world.server, "alice", "bob")  # bob again, another message
    item = chat.send(ALICE, [("bob", 1)], "again").to("bob", 1)
    assert world.submit(submission(("bob", 1), [item])) == first
    case = world.case_repo.get_case(first)
    assert case is not None
    assert (case.report_count, case.reporter_count) == (4, 3)
    assert case.priority == 500 + duplicate_boost(4, 3) == 500 + 25 * 2 + 5
    assert report(world, "bob", subject="eve") != first  # another subject, another case


def test_duplicate_boost_is_capped_and_prefers_distinct_reporters() -> None:
    assert duplicate_boost(1, 1) == 0
    assert duplicate_boost(10, 1) < duplicate_boost(10, 10)
    assert duplicate_boost(10_000, 10_000) == 250


def test_cse_report_moves_the_case_to_child_safety_and_tightens_the_sla(
    world: World, staff: dict[str, Principal]
) -> None:
    case_id = report(world, "bob")
    world.cases.claim(staff["rita"], case_id, now_ms=world.now)
    before = world.case_repo.get_case(case_id)
    assert before is not None and before.sla_due_ms == world.now + 24 * HOUR_MS
    world.now += MIN
    assert report(world, "carol", category="child_sexual_exploitation") == case_id
    case = world.case_repo.get_case(case_id)
    assert case is not None
    assert (
        case.queue_id == QueueId.CHILD_SAFETY
        and case.category is Category.CHILD_SEXUAL_EXPLOITATION
    )
    assert case.sla_due_ms == world.now + HOUR_MS
    assert case.lock_holder is None  # rita was given the lock under the old queue's rules
    with pytest.raises(ChildSafetyPermissionError):
        world.cases.view_case(staff["rita"], case_id, now_ms=world.now)
    assert world.cases.view_case(staff["cleo"], case_id, now_ms=world.now).reports


def test_routing_fast_path_cannot_be_configured_away() -> None:
    catch_all = RoutingRule(name="everything-general", queue_id=QueueId.GENERAL)
    router = Router(rules=[catch_all])
    cse = RoutingInput(Category.CHILD_SEXUAL_EXPLOITATION, ConversationKind.GROUP, True)
    assert router.route(cse).queue_id == QueueId.CHILD_SAFETY
    assert router.route(cse).rule == "cse-fast-path"
    spam = RoutingInput(Category.SPAM, ConversationKind.DIRECT, False)
    assert router.route(spam).queue_id == QueueId.GENERAL
    with pytest.raises(SafetyInputError):
        Router(rules=[RoutingRule(name="leak", queue_id=QueueId.CHILD_SAFETY)])
    with pytest.raises(SafetyInputError):
        Router(rules=[RoutingRule(name="nowhere", queue_id="no-such-queue")])


def test_default_routing_and_ordered_rules() -> None:
    router = Router()
    threat = RoutingInput(Category.VIOLENT_THREAT, ConversationKind.DIRECT, False)
    assert router.route(threat).queue_id == QueueId.VIOLENCE
    assert router.route(threat).priority == 800
    repeat = RoutingInput(Category.VIOLENT_THREAT, ConversationKind.DIRECT, False, 2)
    assert router.route(repeat).rule == "repeat-severe" and router.route(repeat).priority == 850
    for category in Category:
        decision = router.route(RoutingInput(category, ConversationKind.DIRECT, False))
        assert (decision.queue_id == QueueId.CHILD_SAFETY) == (
            category is Category.CHILD_SEXUAL_EXPLOITATION
        )


def test_locks_are_exclusive_visible_and_expire(world: World, staff: dict[str, Principal]) -> None:
    case_id = report(world, "bob")
    t = world.now
    case = world.cases.claim(staff["rita"], case_id, now_ms=t, duration_ms=10 * MIN)
    assert lock_remaining_ms(case, t + 4 * MIN) == 6 * MIN
    summary = world.cases.list_queue(staff["rob"], QueueId.HARASSMENT, now_ms=t + 4 * MIN)
    assert summary[0].lock_remaining_ms == 6 * MIN
    with pytest.raises(CaseLockedError, match="360 more seconds"):
        world.cases.claim(staff["rob"], case_id, now_ms=t + 4 * MIN)
    with pytest.raises(CaseLockedError):
        world.cases.release(staff["rob"], case_id, now_ms=t + 4 * MIN)
    world.cases.claim(staff["rita"], case_id, now_ms=t + 5 * MIN, duration_ms=10 * MIN)  # renew
    world.cases.claim(staff["rob"], case_id, now_ms=t + 15 * MIN)  # expired: free to take
    world.cases.release(staff["lee"], case_id, now_ms=t + 16 * MIN)  # a lead breaks it
    unlocked = world.case_repo.get_case(case_id)
    assert unlocked is not None and unlocked.lock_holder is None
    with pytest.raises(SafetyInputError):
        world.cases.claim(staff["rob"], case_id, now_ms=t, duration_ms=2 * HOUR_MS)


def test_sla_remaining_and_queue_order(world: World, staff: dict[str, Principal]) -> None:
    low = report(world, "bob", subject="eve")
    world.now += MIN
    high = report(world, "bob", subject="mallory", category="violent_threat")
    for _ in ("carol", "dave"):
        report(world, _, subject="eve")
    listing = world.cases.list_queue(staff["rita"], QueueId.HARASSMENT, now_ms=world.now)
    assert [s.case.case_id for s in listing] == [low]
    assert listing[0].sla_remaining_ms == 24 * HOUR_MS - MIN
    late = world.cases.list_queue(staff["rita"], QueueId.VIOLENCE, now_ms=world.now + 5 * HOUR_MS)
    assert late[0].case.case_id == high and late[0].sla_remaining_ms == -HOUR_MS
    with pytest.raises(PermissionDeniedError):
        world.cases.list_queue(staff["rita"], QueueId.FRAUD_SPAM, now_ms=world.now)
    with pytest.raises(ChildSafetyPermissionError):
        world.cases.list_queue(staff["rita"], QueueId.CHILD_SAFETY, now_ms=world.now)


def test_decisions_need_lock_policy_and_reason(world: World, staff: dict[str, Principal]) -> None:
    case_id = report(world, "bob")
    rita, t = staff["rita"], world.now
    decide = world.cases.decide
    with pytest.raises(CaseLockedError):
        decide(rita, case_id, kind=DecisionKind.WARN, policy_id="HAR-1", reason="r", now_ms=t)
    world.cases.claim(rita, case_id, now_ms=t)
    with pytest.raises(InvalidDecisionError, match="reason"):
        decide(rita, case_id, kind=DecisionKind.WARN, policy_id="HAR-1", reason="  ", now_ms=t)
    with pytest.raises(InvalidDecisionError, match="policy"):
        decide(rita, case_id, kind=DecisionKind.WARN, policy_id="NOPE", reason="r", now_ms=t)
    with pytest.raises(InvalidDecisionError, match="future"):
        decide(rita, case_id, kind=DecisionKind.SUSPEND, policy_id="HAR-1", reason="r", now_ms=t)
    with pytest.raises(InvalidDecisionError, match="no end"):
        decide(
            rita,
            case_id,
            kind=DecisionKind.WARN,
            policy_id="HAR-1",
            reason="r",
            now_ms=t,
            until_ms=t + 1,
        )
    outcome = decide(
        rita,
        case_id,
        kind=DecisionKind.SUSPEND,
        policy_id="HAR-1",
        reason="repeated insults after warning",
        now_ms=t,
        until_ms=t + HOUR_MS,
    )
    (enforcement,) = outcome.enforcements
    assert (enforcement.account, enforcement.kind, enforcement.until_ms) == (
        "alice",
        EnforcementKind.SUSPEND,
        t + HOUR_MS,
    )
    assert world.cases.active_enforcements("alice", now_ms=t + 1) == [enforcement]
    assert world.cases.active_enforcements("alice", now_ms=t + HOUR_MS) == []
    case = world.case_repo.get_case(case_id)
    assert case is not None and case.state is CaseState.ACTIONED and case.lock_holder is None
    assert world.audit_repo.rows[-1].details_obj["policy"] == "HAR-1"
    view = world.cases.view_case(staff["lee"], case_id, now_ms=t)
    assert all(r.all_items_verified for r in view.reports)
    assert view.decisions[0].reason == "repeated insults after warning"


def test_ban_needs_a_second_different_reviewer(world: World, staff: dict[str, Principal]) -> None:
    case_id = report(world, "bob", category="violent_threat")
    rita, lee, t = staff["rita"], staff["lee"], world.now
    world.cases.claim(rita, case_id, now_ms=t)
    proposed = world.cases.decide(
        rita,
        case_id,
        kind=DecisionKind.BAN,
        policy_id="VIO-1",
        reason="credible threat to kill",
        now_ms=t,
    )
    assert proposed.decision.status is DecisionStatus.PROPOSED and not proposed.enforcements
    world.cases.claim(rita, case_id, now_ms=t + 1)
    with pytest.raises(PermissionDeniedError):  # reviewers cannot confirm
        world.cases.confirm(rita, case_id, reason="ok", now_ms=t + 1)
    world.cases.release(rita, case_id, now_ms=t + 2)
    # A lead who proposed cannot confirm their own proposal either.
    world.cases.claim(lee, case_id, now_ms=t + 3)
    outcome = world.cases.confirm(lee, case_id, reason="agree, explicit threat", now_ms=t + 4)
    assert outcome.decision.second_reviewer == lee.staff_id
    assert [e.kind for e in outcome.enforcements] == [EnforcementKind.BAN]

    other = report(world, "carol", subject="mallory", category="violent_threat")
    world.cases.claim(lee, other, now_ms=t + 5)
    world.cases.decide(
        lee, other, kind=DecisionKind.BAN, policy_id="VIO-1", reason="r", now_ms=t + 5
    )
    world.cases.claim(lee, other, now_ms=t + 6)
    with pytest.raises(SameReviewerError):
        world.cases.confirm(lee, other, reason="me again", now_ms=t + 6)


def test_rejected_proposal_reopens_the_case(world: World, staff: dict[str, Principal]) -> None:
    case_id = report(world, "bob")
    world.cases.claim(staff["rita"], case_id, now_ms=world.now)
    world.cases.decide(
        staff["rita"],
        case_id,
        kind=DecisionKind.ESCALATE_REFERRAL,
        policy_id="HAR-1",
        reason="r",
        now_ms=world.now,
    )
    world.cases.claim(staff["lee"], case_id, now_ms=world.now)
    world.cases.reject(staff["lee"], case_id, reason="not referable", now_ms=world.now)
    case = world.case_repo.get_case(case_id)
    assert case is not None and case.state is CaseState.OPEN


def test_escalation_for_a_second_opinion(world: World, staff: dict[str, Principal]) -> None:
    case_id = report(world, "bob")
    rita, rob, lee, t = staff["rita"], staff["rob"], staff["lee"], world.now
    world.cases.claim(rita, case_id, now_ms=t)
    with pytest.raises(InvalidDecisionError):
        world.cases.escalate(rita, case_id, reason="", now_ms=t)
    world.cases.escalate(rita, case_id, reason="unsure whether this is satire", now_ms=t)
    world.cases.claim(rob, case_id, now_ms=t + 1)
    with pytest.raises(PermissionDeniedError):  # a peer reviewer is not a second reviewer
        world.cases.decide(
            rob, case_id, kind=DecisionKind.DISMISS, policy_id="NV-0", reason="r", now_ms=t + 1
        )
    world.cases.release(rob, case_id, now_ms=t + 2)
    world.cases.claim(lee, case_id, now_ms=t + 3)
    outcome = world.cases.decide(
        lee,
        case_id,
        kind=DecisionKind.DISMISS,
        policy_id="NV-0",
        reason="satire, no target",
        now_ms=t + 3,
    )
    assert outcome.decision.status is DecisionStatus.FINAL and not outcome.enforcements
    notes = world.cases.view_case(lee, case_id, now_ms=t).notes
    assert "satire" in notes[0].text


def test_appeals_are_decided_by_a_different_reviewer(
    world: World, staff: dict[str, Principal]
) -> None:
    case_id = report(world, "bob")
    rita, rob, t = staff["rita"], staff["rob"], world.now
    world.cases.claim(rita, case_id, now_ms=t)
    outcome = world.cases.decide(
        rita,
        case_id,
        kind=DecisionKind.RESTRICT,
        policy_id="HAR-1",
        reason="abusive messages",
        now_ms=t,
    )
    decision_id = outcome.decision.decision_id
    with pytest.raises(PermissionDeniedError):
        world.cases.file_appeal("bob", decision_id, statement="not me", now_ms=t)
    appeal = world.cases.file_appeal(
        "alice", decision_id, statement="context missing", now_ms=t + 1
    )
    with pytest.raises(InvalidCaseStateError):
        world.cases.file_appeal("alice", decision_id, statement="again", now_ms=t + 2)
    world.cases.claim(rita, case_id, now_ms=t + 3)
    with pytest.raises(SameReviewerError):
        world.cases.decide_appeal(rita, appeal.appeal_id, overturn=True, reason="r", now_ms=t + 3)
    world.cases.release(rita, case_id, now_ms=t + 4)
    world.cases.claim(rob, case_id, now_ms=t + 5)
    with pytest.raises(InvalidDecisionError):
        world.cases.decide_appeal(rob, appeal.appeal_id, overturn=True, reason="", now_ms=t + 5)
    result = world.cases.decide_appeal(
        rob, appeal.appeal_id, overturn=True, reason="quoted lyrics", now_ms=t + 5
    )
    assert [e.kind for e in result.revoked] == [EnforcementKind.RESTRICT]
    assert world.cases.active_enforcements("alice", now_ms=t + 6) == []
    case = world.case_repo.get_case(case_id)
    assert case is not None and case.state is CaseState.OVERTURNED


def test_dismissals_and_late_appeals_are_not_appealable(
    world: World, staff: dict[str, Principal]
) -> None:
    case_id = report(world, "bob")
    world.cases.claim(staff["rita"], case_id, now_ms=world.now)
    outcome = world.cases.decide(
        staff["rita"],
        case_id,
        kind=DecisionKind.DISMISS,
        policy_id="NV-0",
        reason="fine",
        now_ms=world.now,
    )
    with pytest.raises(InvalidCaseStateError):
        world.cases.file_appeal(
            "alice", outcome.decision.decision_id, statement="", now_ms=world.now
        )
    other = report(world, "bob", subject="eve")
    world.cases.claim(staff["rita"], other, now_ms=world.now)
    warned = world.cases.decide(
        staff["rita"],
        other,
        kind=DecisionKind.WARN,
        policy_id="HAR-1",
        reason="r",
        now_ms=world.now,
    )
    with pytest.raises(InvalidCaseStateError, match="window"):
        world.cases.file_appeal(
            "eve", warned.decision.decision_id, statement="", now_ms=world.now + 181 * 24 * HOUR_MS
        )


def test_void_every_report_of_a_bad_faith_reporter(
    world: World, staff: dict[str, Principal]
) -> None:
    only_troll = report(world, "troll", subject="victim1")
    shared = report(world, "troll", subject="victim2")
    assert report(world, "honest", subject="victim2") == shared
    with pytest.raises(PermissionDeniedError):
        world.cases.void_reporter(staff["rita"], "troll", reason="brigading", now_ms=world.now)
    result = world.cases.void_reporter(staff["lee"], "troll", reason="brigading", now_ms=world.now)
    assert result.reports_voided == 2
    assert result.cases_closed == (only_troll,) and result.cases_updated == (shared,)
    closed = world.case_repo.get_case(only_troll)
    kept = world.case_repo.get_case(shared)
    assert closed is not None and closed.state is CaseState.VOIDED
    assert kept is not None and (kept.report_count, kept.reporter_count) == (1, 1)
    assert kept.priority == kept.base_priority
    assert world.audit_repo.rows[-1].action == "report.reporter_voided"


def test_assignment_respects_queue_and_clearance(world: World, staff: dict[str, Principal]) -> None:
    chat = group_chat(world.server)
    item = chat.send(ALICE, [("bob", 1)], "x").to("bob", 1)
    cse_case = world.submit(submission(("bob", 1), [item], category="child_sexual_exploitation"))
    with pytest.raises(ChildSafetyPermissionError):
        world.cases.assign(staff["lee"], cse_case, staff["cleo"].staff_id, now_ms=world.now)
    with pytest.raises(ChildSafetyPermissionError):
        world.cases.assign(staff["cara"], cse_case, staff["rita"].staff_id, now_ms=world.now)
    case = world.cases.assign(staff["cara"], cse_case, staff["cleo"].staff_id, now_ms=world.now)
    assert case.assignee == staff["cleo"].staff_id
    with pytest.raises(PermissionDeniedError):
        world.cases.assign(staff["cleo"], cse_case, staff["cleo"].staff_id, now_ms=world.now)


def test_notes_are_stored_but_not_copied_into_the_audit_log(
    world: World, staff: dict[str, Principal]
) -> None:
    case_id = report(world, "bob")
    note = world.cases.add_note(
        staff["rita"], case_id, "subject's address is 1 Main St", now_ms=world.now
    )
    assert world.case_repo.notes_for_case(case_id) == [note]
    assert "Main St" not in world.audit_repo.rows[-1].details and "Main" not in repr(note)
    with pytest.raises(SafetyInputError):
        world.cases.add_note(staff["rita"], case_id, " ", now_ms=world.now)
    assert world.audit.verify().ok


def test_list_cases_pages_every_case_oldest_first_with_its_source(world: World) -> None:
    ids = []
    for n, (subject, category) in enumerate(
        [("alice", "harassment"), ("mallory", "spam"), ("eve", "child_sexual_exploitation")]
    ):
        world.now += 1000
        ids.append(report(world, f"reporter{n}", subject, category))
    listed = world.case_repo.list_cases(limit=2) + world.case_repo.list_cases(limit=2, offset=2)
    assert [c.case_id for c in listed] == ids
    assert {c.source for c in listed} == {CaseSource.REPORT}
    assert listed[2].queue_id == QueueId.CHILD_SAFETY
