"""The transparency report counts what the system stored (`tidings.safety.transparency`):
reports, cases, decisions, enforcements, appeals and reversals seeded through the services,
detection matches through the detection pipeline, each counted in its period and not in the
next (boundaries to the millisecond), in memory, on SQLite and on PostgreSQL; counts are
uncapped; the period parser is strict (a property test)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert

from tests.safety.conftest import (
    ALL_QUEUES,
    World,
    backend_db,
    direct_chat,
    submission,
)
from tests.safety.test_detection import (
    LISTED,
    REVIEWER,
    THRESHOLD,
    UNLISTED,
    edited,
    make_env,
)
from tidings.clock import DAY_MS
from tidings.console.transparency import charts_of, render_report_html
from tidings.errors import InvalidPeriodError
from tidings.safety.audit import AuditAction
from tidings.safety.case_model import CaseSource, DecisionKind
from tidings.safety.categories import Category, QueueId
from tidings.safety.refusals import REFUSAL_REASONS
from tidings.safety.sql import SafetyDatabase, SqlEnforcementRepository
from tidings.safety.staff import Principal, Role, permissions_for
from tidings.safety.transparency import (
    REPORT_FORMAT,
    FigureStatus,
    InMemoryReportCounts,
    TransparencyReport,
    TransparencySources,
    build_report,
    parse_period,
    period_between,
)
from tidings.storage.safety_schema import account_enforcements

H2 = parse_period("2026H2")
S, E = H2.start_ms, H2.end_ms  # 2026-07-01T00:00Z, 2027-01-01T00:00Z (exclusive)


def sources_of(world: World) -> TransparencySources:
    reports: Any = world.report_repo
    if not hasattr(reports, "count_reports"):
        reports = InMemoryReportCounts(world.report_repo.reports)
    return TransparencySources(
        reports=reports,
        cases=world.case_repo,  # type: ignore[arg-type]
        enforcements=world.enforcement_repo,  # type: ignore[arg-type]
        audit=world.audit_repo,  # type: ignore[arg-type]
        refusals=world.refusals,
    )


def report_of(world: World, period: str) -> TransparencyReport:
    return build_report(sources_of(world), parse_period(period), generated_ms=E + DAY_MS)


def breakdown(report: TransparencyReport, section: str, figure: str) -> dict[str, int]:
    return dict(report.section(section).figure(figure).breakdown)


# --- periods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "last_day"),
    [
        ("2026H1", "2026-01-01T00:00:00Z", "2026-06-30"),
        ("2026H2", "2026-07-01T00:00:00Z", "2026-12-31"),
        ("2026Q3", "2026-07-01T00:00:00Z", "2026-09-30"),
        ("2026-11", "2026-11-01T00:00:00Z", "2026-11-30"),
        ("2028-02", "2028-02-01T00:00:00Z", "2028-02-29"),  # a leap year
        ("2026", "2026-01-01T00:00:00Z", "2026-12-31"),
        ("2026-07-01..2026-09-30", "2026-07-01T00:00:00Z", "2026-09-30"),
        ("9999H2", "9999-07-01T00:00:00Z", "9999-12-31"),
    ],
)
def test_periods_parse_to_utc_half_open_intervals(text: str, start: str, last_day: str) -> None:
    period = parse_period(text)
    assert period.label == text
    assert period.to_json()["start"] == start and period.last_day == last_day


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026h2",
        "2026H3",
        "2026Q0",
        "2026Q5",
        "2026-13",
        "2026-00",
        "2026-1",
        " 2026H1",
        "2026H1 ",
        "1969",
        "26H1",
        "２０２６H1",  # fullwidth digits  # noqa: RUF001
        "2026-02-30..2026-03-01",
        "2026-07-02..2026-07-01",
        "2026-07-01..",
        "2026-7-01..2026-07-02",
        "20260701..20260702",
        "2026-07-01",
        "x" * 40,
    ],
)
def test_bad_periods_are_a_typed_error(text: str) -> None:
    with pytest.raises(InvalidPeriodError):
        parse_period(text)


def test_from_to_includes_both_days() -> None:
    period = period_between("2026-07-01", "2026-07-01")
    assert period.end_ms - period.start_ms == DAY_MS
    with pytest.raises(InvalidPeriodError):
        period_between("2026-07-02", "2026-07-01")


_YEARS = st.integers(1970, 9999)


@st.composite
def period_texts(draw: st.DrawFn) -> str:
    year = draw(_YEARS)
    kind = draw(st.sampled_from(["half", "quarter", "month", "year"]))
    if kind == "half":
        return f"{year}H{draw(st.integers(1, 2))}"
    if kind == "quarter":
        return f"{year}Q{draw(st.integers(1, 4))}"
    if kind == "month":
        return f"{year}-{draw(st.integers(1, 12)):02d}"
    return f"{year}"


@given(period_texts())
def test_every_valid_period_is_whole_days_and_tiles_with_its_parts(text: str) -> None:
    period = parse_period(text)
    assert period.label == text
    assert period.start_ms % DAY_MS == 0 and period.end_ms % DAY_MS == 0
    assert period.start_ms < period.end_ms
    year = int(text[:4])
    if "H" in text:
        half = int(text[-1])
        quarters = [parse_period(f"{year}Q{q}") for q in (2 * half - 1, 2 * half)]
        assert quarters[0].start_ms == period.start_ms and quarters[1].end_ms == period.end_ms
        assert quarters[0].end_ms == quarters[1].start_ms
    if "Q" in text:
        quarter = int(text[-1])
        months = [parse_period(f"{year}-{m:02d}") for m in range(3 * quarter - 2, 3 * quarter + 1)]
        assert months[0].start_ms == period.start_ms and months[-1].end_ms == period.end_ms
        assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(months))
    # The same days as a from/to pair.
    same = period_between(period.to_json()["start"][:10], period.last_day)
    assert (same.start_ms, same.end_ms) == (period.start_ms, period.end_ms)


@given(st.text(max_size=40))
def test_any_text_is_a_period_or_a_typed_error(text: str) -> None:
    try:
        period = parse_period(text)
    except InvalidPeriodError:
        return
    assert re.fullmatch(r"[0-9-HQ.]+", text) and period.start_ms < period.end_ms


# --- counts from real records ---------------------------------------------------------------


def _report(world: World, subject: str, reporter: str, at: int, category: str) -> str:
    world.now = at
    chat = direct_chat(world.server, subject, reporter)
    item = chat.send((subject, 1), [(reporter, 1)], f"{category} from {subject}").to(reporter, 1)
    return world.submit(submission((reporter, 1), [item], category=category))


def _seed(world: World) -> dict[str, str]:
    """Reports, cases, decisions, enforcements and an overturned appeal on both sides of
    2026H2's boundaries."""
    harassment, spam = Category.HARASSMENT.value, Category.SPAM.value
    cse = Category.CHILD_SEXUAL_EXPLOITATION.value
    cases = {
        "m1": _report(world, "m1", "b1", S - 1, harassment),  # the last ms of 2026H1
        "m2": _report(world, "m2", "b2", S, harassment),  # the first ms of 2026H2
        "m3": _report(world, "m3", "b3", S + 1000, spam),
    }
    assert _report(world, "m2", "b4", S + 2000, harassment) == cases["m2"]  # joins its case
    cases["m4"] = _report(world, "m4", "b5", E - 1, cse)  # the last ms of 2026H2
    cases["m5"] = _report(world, "m5", "b6", E, spam)  # the first ms of 2027H1
    # Refused reports: counted per UTC day and reason only; two in 2026H2, one each side.
    for at, reason in [(S - 1, "invalid_report"), (S, "commitment_mismatch"),
                       (E - 1, "report_replayed"), (E, "invalid_report")]:
        world.refusals.increment(at, reason)
    world.now = S
    rita = world.make_staff("rita", Role.REVIEWER, queues=ALL_QUEUES)
    rob = world.make_staff("rob", Role.REVIEWER, queues=ALL_QUEUES)
    lee = world.make_staff("lee", Role.LEAD, queues=ALL_QUEUES)
    c = world.cases
    c.claim(rita, cases["m2"], now_ms=S + 10_000)
    warned = c.decide(
        rita, cases["m2"], kind=DecisionKind.WARN, policy_id="HAR-1", reason="r", now_ms=S + 10_001
    )
    c.claim(rita, cases["m3"], now_ms=S + 20_000)
    c.decide(
        rita,
        cases["m3"],
        kind=DecisionKind.SUSPEND,
        policy_id="SPM-1",
        reason="r",
        now_ms=S + 20_001,
        until_ms=S + 20_001 + DAY_MS,
    )
    appeal = c.file_appeal("m2", warned.decision.decision_id, statement="not me", now_ms=S + 30_000)
    c.claim(rob, cases["m2"], now_ms=S + 40_000)
    c.decide_appeal(rob, appeal.appeal_id, overturn=True, reason="fair", now_ms=S + 40_001)
    # A ban proposed in 2026H2 and confirmed at the first ms of 2027H1 counts in 2027H1.
    c.claim(rita, cases["m1"], now_ms=E - 60_000)
    c.decide(
        rita, cases["m1"], kind=DecisionKind.BAN, policy_id="HAR-1", reason="r", now_ms=E - 59_000
    )
    c.release(rita, cases["m1"], now_ms=E - 58_000)
    c.claim(lee, cases["m1"], now_ms=E - 10)
    c.confirm(lee, cases["m1"], reason="agreed", now_ms=E)
    return cases


def test_the_report_counts_each_record_in_its_period(world: World) -> None:
    _seed(world)
    harassment, spam = Category.HARASSMENT.value, Category.SPAM.value
    cse = Category.CHILD_SEXUAL_EXPLOITATION.value
    report = report_of(world, "2026H2")

    assert report.value("reports", "verified") == 4
    assert breakdown(report, "reports", "verified") == {
        **{c.value: 0 for c in Category},
        harassment: 2,
        spam: 1,
        cse: 1,
    }
    refused = report.section("reports").figure("refused")
    assert (refused.value, refused.status) == (2, FigureStatus.COUNTED)
    assert breakdown(report, "reports", "refused") == {
        **dict.fromkeys(REFUSAL_REASONS, 0), "commitment_mismatch": 1, "report_replayed": 1}
    assert report.value("reports", "received") == 4 + 2
    assert report.value("reports", "voided") == 0

    assert report.value("cases", "opened") == 3
    assert breakdown(report, "cases", "opened") == {"report": 3, "detection": 0}
    by_category = breakdown(report, "cases", "by_category")
    assert (by_category[harassment], by_category[spam], by_category[cse]) == (1, 1, 1)

    decisions = breakdown(report, "actions", "decisions")
    assert report.value("actions", "decisions") == 2
    assert (decisions["warn"], decisions["suspend"], decisions["ban"]) == (1, 1, 0)
    assert breakdown(report, "actions", "enforcements") == {
        "warn": 1,
        "restrict": 0,
        "suspend": 1,
        "ban": 0,
    }
    assert report.value("appeals", "filed") == 1
    assert breakdown(report, "appeals", "decided") == {"upheld": 0, "overturned": 1}
    assert breakdown(report, "appeals", "reversals")["warn"] == 1
    assert report.value("appeals", "reversals") == 1
    assert report.value("detection", "matches") == 0
    for key in ("submitted", "retracted", "accounts_held"):
        figure = report.section("referrals").figure(key)
        assert (figure.value, figure.status) == (0, FigureStatus.COUNTED)
    lawful = {f.key: (f.value, f.status) for f in report.section("lawful_requests").figures}
    assert set(lawful.values()) == {(0, FigureStatus.COUNTED)}

    before = report_of(world, "2026H1")
    assert before.value("reports", "verified") == 1 and before.value("cases", "opened") == 1
    assert before.value("actions", "decisions") == 0

    after = report_of(world, "2027H1")
    assert after.value("reports", "verified") == 1 and after.value("cases", "opened") == 1
    assert breakdown(after, "actions", "decisions")["ban"] == 1
    assert breakdown(after, "actions", "enforcements")["ban"] == 1
    assert after.value("appeals", "filed") == 0

    first_day = build_report(
        sources_of(world), period_between("2026-07-01", "2026-07-01"), generated_ms=E
    )
    assert first_day.value("reports", "verified") == 3
    assert first_day.value("cases", "opened") == 2


def test_the_json_form_is_stable(world: World) -> None:
    _seed(world)
    data = json.loads(json.dumps(report_of(world, "2026H2").to_json()))
    assert data["format"] == REPORT_FORMAT
    assert data["period"] == {
        "label": "2026H2",
        "start": "2026-07-01T00:00:00Z",
        "end": "2027-01-01T00:00:00Z",
    }
    assert list(data["sections"]) == [
        "reports",
        "cases",
        "actions",
        "appeals",
        "detection",
        "referrals",
        "lawful_requests",
    ]
    verified = data["sections"]["reports"]["figures"]["verified"]
    assert set(verified) == {"label", "value", "status", "counts", "by", "breakdown"}
    assert verified["value"] == 4 and verified["status"] == "counted"
    refused = data["sections"]["reports"]["figures"]["refused"]
    assert (refused["value"], refused["status"], refused["by"]) == (2, "counted", "reason")
    received = data["sections"]["lawful_requests"]["figures"]["received"]
    assert received == {
        "label": "Lawful requests received",
        "value": 0,
        "status": "counted",
        "counts": received["counts"],
        "by": "type",
        "breakdown": dict.fromkeys(
            ["preservation", "subpoena", "court_order", "search_warrant", "emergency"], 0
        ),
    }
    assert "safety_lawful_requests" in received["counts"]


def test_the_html_page_has_charts_and_no_external_assets(world: World, tmp_path: Path) -> None:
    _seed(world)
    report = report_of(world, "2026H2")
    html = render_report_html(report)
    assert html.startswith("<!doctype html>")
    assert html.count("<svg") == len(charts_of(report)) + 1  # every breakdown + the overview
    assert 'role="img"' in html and "<title id=" in html and "<desc id=" in html
    assert "<table" in html and 'scope="row"' in html
    assert "not recorded" not in html  # every figure is counted now
    refusals = {b.label: b.value for b in charts_of(report)["reports.refused"].bars}
    assert sum(refusals.values()) == 2 and "Reports refused by reason" in html
    assert not re.search(r"https?:|//[a-z]|<script|<link|<img|url\(|@import", html, re.I)
    # The verified reports chart draws the counts it lists.
    chart = charts_of(report)["reports.verified"]
    assert {b.label: b.value for b in chart.bars}["harassment"] == 2
    assert max(b.width for b in chart.bars) == chart.bar_area


# --- detection ------------------------------------------------------------------------------

LEAD = Principal(
    staff_id="staff_cs_lead",
    username="cslead",
    roles=frozenset({Role.LEAD}),
    permissions=permissions_for({Role.LEAD}, child_safety=True),
    queues=frozenset({QueueId.CHILD_SAFETY.value}),
)


def test_detection_matches_and_their_review_are_counted(
    safety_db: SafetyDatabase | None,
) -> None:
    env = make_env(safety_db)
    try:
        device = env.device("sender")
        for name in LISTED[:THRESHOLD]:
            device.send(edited(name))
        for listed, innocent in zip(LISTED, UNLISTED[:2], strict=False):
            device.send(edited(innocent), claim=edited(listed))
        result = env.detection.run_round()
        assert (result.matches, result.false_candidates) == (THRESHOLD, 2)
        (case,) = env.safety.case_repo.list_cases(limit=10)
        assert case.source is CaseSource.DETECTION
        now = env.clock()
        cases = env.safety.cases
        cases.claim(REVIEWER, case.case_id, now_ms=now)
        cases.decide(
            REVIEWER,
            case.case_id,
            kind=DecisionKind.ESCALATE_REFERRAL,
            policy_id="CSE-1",
            reason="matches three listed images",
            now_ms=now + 1,
        )
        cases.release(REVIEWER, case.case_id, now_ms=now + 2)
        cases.claim(LEAD, case.case_id, now_ms=now + 10)
        cases.confirm(LEAD, case.case_id, reason="confirmed", now_ms=now + 11)

        sources = TransparencySources.of(env.safety)
        month = parse_period("2023-11")  # the detection test world's clock starts there
        report = build_report(sources, month, generated_ms=now + 12)
        assert report.value("detection", "matches") == THRESHOLD
        assert report.value("detection", "false_candidates") == 2
        assert report.value("detection", "cases_opened") == 1
        assert report.value("detection", "confirmed") == 1
        assert breakdown(report, "detection", "confirmed")["escalate_referral"] == 1
        assert report.value("detection", "dismissed") == 0
        assert breakdown(report, "referrals", "escalated") == {"report": 0, "detection": 1}
        assert breakdown(report, "cases", "opened") == {"report": 0, "detection": 1}
        assert breakdown(report, "actions", "enforcements")["ban"] == 1
        other = build_report(sources, parse_period("2023-10"), generated_ms=now)
        assert other.value("detection", "matches") == 0
        assert other.value("detection", "false_candidates") == 0
    finally:
        if safety_db is not None:
            env.safety.close()


# --- uncapped -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SafetyDatabase | None]:
    yield from backend_db(request, tmp_path)


def test_counts_are_not_capped(sql_db: SafetyDatabase | None) -> None:
    """More rows than Coop's 10,000-row export: counted in the database, all of them."""
    assert sql_db is not None
    rows = [
        {
            "enforcement_id": f"enf_{i:06d}",
            "username": f"user{i % 97}",
            "kind": "warn" if i % 3 else "ban",
            "until_ms": None,
            "decision_id": f"dec_{i:06d}",
            "case_id": f"case_{i:06d}",
            "created_ms": S + i,
            "revoked_ms": None,
        }
        for i in range(12_345)
    ]
    with sql_db.write() as c:
        c.execute(insert(account_enforcements), rows)
    counts = SqlEnforcementRepository(sql_db).count_enforcements(S, E)
    assert counts == {("warn",): 8230, ("ban",): 4115}
    assert SqlEnforcementRepository(sql_db).count_enforcements(S + 12_000, E) == {
        ("warn",): 230,
        ("ban",): 115,
    }


def test_referrals_and_holds_are_counted_from_their_records(
    world: World, safety_db: SafetyDatabase | None
) -> None:
    from tidings.safety.holds import (
        HoldKind,
        HoldService,
        InMemoryHoldRepository,
        InMemorySubjectRecords,
    )
    from tidings.safety.sql import SqlHoldRepository

    holds_repo: Any = InMemoryHoldRepository() if safety_db is None else SqlHoldRepository(
        safety_db
    )
    clock = {"now": parse_period("2026H2").start_ms + DAY_MS}
    holds = HoldService(holds_repo, world.audit, InMemorySubjectRecords(),
                        clock=lambda: clock["now"])
    holds.place(None, "mallory", HoldKind.REFERRAL, days=365, reference="NCMEC 1")
    holds.place(None, "eve", HoldKind.REFERRAL, days=365, reference="NCMEC 2")
    clock["now"] = parse_period("2027H1").start_ms  # the next period
    holds.place(None, "trent", HoldKind.PRESERVATION_REQUEST, days=90, reference="FBI 3")
    for action in (AuditAction.REFERRAL_SUBMITTED, AuditAction.REFERRAL_SUBMITTED,
                   AuditAction.REFERRAL_RETRACT):
        world.audit.append(actor="staff_lou", action=action, target="referral:rf_x",
                           now_ms=parse_period("2026H2").start_ms + 2 * DAY_MS)
    sources = replace(sources_of(world), holds=holds_repo)
    h2 = build_report(sources, parse_period("2026H2"), generated_ms=E)
    assert h2.value("referrals", "submitted") == 2
    assert h2.value("referrals", "retracted") == 1
    assert h2.value("referrals", "accounts_held") == 2
    assert h2.value("lawful_requests", "preservation") == 0
    h1_next = build_report(sources, parse_period("2027H1"), generated_ms=E)
    assert h1_next.value("lawful_requests", "preservation") == 1
    assert h1_next.value("referrals", "accounts_held") == 0
