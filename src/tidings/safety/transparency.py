"""The transparency report (issue 11, docs/operations.md "Transparency report"): what the
system did in a period, counted from what it stores — never typed in by hand.

`parse_period` reads a period (``2026H2``, ``2026Q3``, ``2026-11``, ``2026``, or
``2026-07-01..2026-09-30``; `period_between` the ``--from``/``--to`` pair), strictly, in UTC,
as the half-open interval ``[start_ms, end_ms)``; anything else is `InvalidPeriodError`.

`build_report` asks the repositories for their read-only aggregates (`TransparencySources`:
one ``COUNT(*) ... GROUP BY`` per figure on SQL, so nothing is capped and no row is loaded;
the in-memory twins count their rows the same way) and assembles a `TransparencyReport`:
sections of `Figure`s, each with its value, its status, what it counts and its breakdown.
``TransparencyReport.to_json`` is the stable JSON form (`REPORT_FORMAT`).

A figure's status says how far to trust its number:

- ``counted``: counted from durable records for the period;
- ``not_recorded``: the system does not keep what it would count, so there is no number
  (refused reports are counted per day and reason only, `tidings.safety.refusals`: nothing
  else of a refused report is kept);
- ``not_implemented``: the feature it counts (referrals to the clearinghouse, lawful
  requests, preservation, non-disclosure orders) does not exist yet: 0, said so. When the
  feature lands, its figure keeps its key and becomes ``counted``.

Pure: no I/O beyond the repositories' reads, time only from the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from tidings.clock import DAY_MS
from tidings.errors import InvalidPeriodError
from tidings.safety.audit import AuditAction
from tidings.safety.case_model import (
    AppealStatus,
    CaseSource,
    DecisionKind,
    DecisionStatus,
    EnforcementKind,
)
from tidings.safety.categories import Category
from tidings.safety.lawful_model import RequestType
from tidings.safety.memory_rows import GroupCounts, count_groups, in_period
from tidings.safety.refusals import REFUSAL_REASONS
from tidings.safety.reports import ReportRecord, ReportStatus

__all__ = [
    "REPORT_FORMAT",
    "Figure",
    "FigureStatus",
    "InMemoryReportCounts",
    "Period",
    "Section",
    "TransparencyReport",
    "TransparencySources",
    "build_report",
    "current_half",
    "parse_period",
    "period_between",
]

REPORT_FORMAT = "tidings.transparency/1"
"""The JSON form's ``format``: bumped only when a key changes meaning or goes away."""

_MAX_YEAR = 9999
_MIN_YEAR = 1970


# --- periods --------------------------------------------------------------------------------


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year: the end of 9999H2 is
    10000-01-01, past what `datetime` holds)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _month_ms(year: int, month: int) -> int:
    """Epoch ms of the first instant of ``month`` (1-based; 13 is January of the next year)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return _days_from_civil(year, month, 1) * DAY_MS


@dataclass(frozen=True, slots=True)
class Period:
    """A reporting period: ``start_ms <= t < end_ms`` (UTC), named ``label`` (the text it was
    parsed from, normalised)."""

    label: str
    start_ms: int
    end_ms: int

    def to_json(self) -> dict[str, str]:
        return {"label": self.label, "start": _iso(self.start_ms), "end": _iso(self.end_ms)}

    @property
    def last_day(self) -> str:
        """The period's last day, ``YYYY-MM-DD`` (its end is exclusive)."""
        return _iso(self.end_ms - 1)[:10]


def _iso(ms: int) -> str:
    if ms >= _month_ms(_MAX_YEAR + 1, 1):
        return "10000-01-01T00:00:00Z"  # the end of year 9999 (datetime stops before it)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_YEAR = r"(?P<year>[0-9]{4})"
_FORMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_YEAR + r"H(?P<n>[12])"), "half"),
    (re.compile(_YEAR + r"Q(?P<n>[1-4])"), "quarter"),
    (re.compile(_YEAR + r"-(?P<n>0[1-9]|1[0-2])"), "month"),
    (re.compile(_YEAR), "year"),
)
_DATE = re.compile(r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})")
_SPAN = {"half": 6, "quarter": 3, "month": 1, "year": 12}


def _year(text: str) -> int:
    year = int(text)
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise InvalidPeriodError(f"the year of a period must be {_MIN_YEAR}..{_MAX_YEAR}")
    return year


def _day_ms(text: str) -> int:
    match = _DATE.fullmatch(text)
    if match is None:
        raise InvalidPeriodError("a period's dates must be YYYY-MM-DD")
    year, month, day = _year(match["year"]), int(match["month"]), int(match["day"])
    if not 1 <= month <= 12:
        raise InvalidPeriodError("a period's dates must be YYYY-MM-DD")
    length = (_month_ms(year, month + 1) - _month_ms(year, month)) // DAY_MS
    if not 1 <= day <= length:
        raise InvalidPeriodError(f"no such day: {text}")
    return _days_from_civil(year, month, day) * DAY_MS


def period_between(first_day: str, last_day: str) -> Period:
    """The days ``first_day`` through ``last_day`` (``YYYY-MM-DD``, both included, UTC).

    Raises:
        InvalidPeriodError: not a real date in that form, or ``last_day`` before ``first_day``.
    """
    start, last = _day_ms(first_day), _day_ms(last_day)
    if last < start:
        raise InvalidPeriodError("the period ends before it starts")
    return Period(f"{first_day}..{last_day}", start, last + DAY_MS)


def parse_period(text: str) -> Period:
    """``2026H1``/``2026H2`` (half-years), ``2026Q1``..``2026Q4``, ``2026-01``..``2026-12``,
    ``2026`` (the year) or ``2026-07-01..2026-09-30`` (days, both included); UTC. Nothing
    else: no spaces, no lower case, years 1970..9999.

    Raises:
        InvalidPeriodError: any other text.
    """
    if not isinstance(text, str) or len(text) > 32:
        raise InvalidPeriodError()
    if ".." in text:
        first, _, last = text.partition("..")
        return period_between(first, last)
    for pattern, kind in _FORMS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        year = _year(match["year"])
        n = int(match.groupdict().get("n") or 1)
        first_month = (n - 1) * _SPAN[kind] + 1 if kind != "month" else n
        return Period(
            text, _month_ms(year, first_month), _month_ms(year, first_month + _SPAN[kind])
        )
    raise InvalidPeriodError()


def current_half(now_ms: int) -> Period:
    """The half-year ``now_ms`` falls in (the console's default period)."""
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    return parse_period(f"{moment.year:04d}H{1 if moment.month <= 6 else 2}")


# --- the sources ----------------------------------------------------------------------------


class ReportCounts(Protocol):
    def count_reports(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Stored reports received in the period, keyed ``(category, status)``."""
        ...


class CaseCounts(Protocol):
    def count_cases(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Cases opened in the period, keyed ``(source, category)``."""
        ...

    def count_decisions(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Decisions settled in the period, keyed ``(case source, kind, status)``."""
        ...

    def count_appeals_filed(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Appeals filed in the period, keyed ``(status,)``."""
        ...

    def count_appeals_decided(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Appeals decided in the period, keyed ``(status,)``."""
        ...


class EnforcementCounts(Protocol):
    def count_enforcements(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Enforcements applied in the period, keyed ``(kind,)``."""
        ...

    def count_revocations(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Enforcements revoked in the period, keyed ``(kind,)``."""
        ...


class AuditCounts(Protocol):
    def count_actions(self, start_ms: int, end_ms: int, actions: Iterable[str]) -> GroupCounts:
        """Audit entries of ``actions`` in the period, keyed ``(action,)``."""
        ...


class DetectionCounts(Protocol):
    def count_matches(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Images matched in the period, the total under ``()``."""
        ...


class LawfulCounts(Protocol):
    def count_received(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Lawful requests received in the period, keyed ``(kind, country, produced, ndo)``."""
        ...


class RefusalCounts(Protocol):
    def count_refused(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Reports refused by verification on the period's days: ``(reason,)``."""
        ...


class HoldCounts(Protocol):
    def count_placed(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Preservation holds placed in the period, keyed ``(kind,)``."""
        ...


class InMemoryReportCounts:
    """`ReportCounts` over an in-memory report repository's ``reports`` (its module, shared
    with the report intake, stays as it is; the SQL repository answers with a GROUP BY)."""

    def __init__(self, reports: Mapping[str, ReportRecord]) -> None:
        self._reports = reports

    def count_reports(self, start_ms: int, end_ms: int) -> GroupCounts:
        return count_groups(
            list(self._reports.values()),
            lambda r: (
                (r.category.value, r.status.value)
                if in_period(r.received_ms, start_ms, end_ms)
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class TransparencySources:
    """The repositories' aggregates the report reads (``detection`` None: detection is not
    configured, its figures are 0)."""

    reports: ReportCounts
    cases: CaseCounts
    enforcements: EnforcementCounts
    audit: AuditCounts
    detection: DetectionCounts | None = None
    holds: HoldCounts | None = None
    lawful: LawfulCounts | None = None
    refusals: RefusalCounts | None = None

    @classmethod
    def of(cls, service: Any) -> TransparencySources:
        """The sources of a `tidings.safety.service.SafetyService` (its own repositories,
        not the enforcement wrapper that notifies the messaging server)."""
        repos = service.repos
        reports = repos.reports
        if not hasattr(reports, "count_reports"):
            reports = InMemoryReportCounts(reports.reports)
        return cls(
            reports=reports,
            cases=repos.cases,
            enforcements=repos.enforcements,
            audit=repos.audit,
            detection=getattr(service, "detection_repo", None),
            holds=getattr(repos, "holds", None),
            lawful=getattr(repos, "lawful", None),
            refusals=getattr(repos, "refusals", None),
        )


# --- the report -----------------------------------------------------------------------------


class FigureStatus(StrEnum):
    """How far a figure's value can be trusted (module docstring). Values are stable."""

    COUNTED = "counted"
    NOT_RECORDED = "not_recorded"
    NOT_IMPLEMENTED = "not_implemented"


@dataclass(frozen=True, slots=True)
class Figure:
    """One number of the report. ``value`` is None only when ``NOT_RECORDED``;
    ``breakdown`` ((key, count) in a fixed order: every known key, zeros included) splits it
    (``breakdown_label`` names what by); ``counts`` says what it counts and from where."""

    key: str
    label: str
    value: int | None
    counts: str
    status: FigureStatus = FigureStatus.COUNTED
    breakdown: tuple[tuple[str, int], ...] = ()
    breakdown_label: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "value": self.value,
            "status": self.status.value,
            "counts": self.counts,
        }
        if self.breakdown_label:
            out["by"] = self.breakdown_label
            out["breakdown"] = dict(self.breakdown)
        return out


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    figures: tuple[Figure, ...]

    def figure(self, key: str) -> Figure:
        """The figure ``key``. Raises KeyError when there is none."""
        for item in self.figures:
            if item.key == key:
                return item
        raise KeyError(key)


@dataclass(frozen=True, slots=True)
class TransparencyReport:
    """The report of one period, generated at ``generated_ms``."""

    period: Period
    generated_ms: int
    sections: tuple[Section, ...] = field(default=())

    def section(self, key: str) -> Section:
        """The section ``key``. Raises KeyError when there is none."""
        for item in self.sections:
            if item.key == key:
                return item
        raise KeyError(key)

    def value(self, section: str, figure: str) -> int | None:
        return self.section(section).figure(figure).value

    def to_json(self) -> dict[str, Any]:
        """``{"format", "period": {label, start, end}, "generated_at", "sections": {key:
        {"title", "figures": {key: {label, value, status, counts[, by, breakdown]}}}}}``;
        times ISO 8601 UTC, ``end`` exclusive."""
        return {
            "format": REPORT_FORMAT,
            "period": self.period.to_json(),
            "generated_at": _iso(self.generated_ms),
            "sections": {
                s.key: {"title": s.title, "figures": {f.key: f.to_json() for f in s.figures}}
                for s in self.sections
            },
        }


def _total(counts: GroupCounts, names: tuple[str, ...], **where: str | Sequence[str]) -> int:
    """The sum of ``counts`` over the keys that match ``where`` (key position, as ``names``
    names them -> the allowed value or values)."""
    total = 0
    for key, n in counts.items():
        fields = dict(zip(names, key, strict=True))
        if all(fields[k] in ((v,) if isinstance(v, str) else v) for k, v in where.items()):
            total += n
    return total


def _split(counts: GroupCounts, position: int, order: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """``counts`` summed by the key at ``position``: every name of ``order`` (zeros kept, in
    that order), then any other stored value, sorted."""
    sums: dict[str, int] = dict.fromkeys(order, 0)
    for key, n in counts.items():
        sums[key[position]] = sums.get(key[position], 0) + n
    known = list(dict.fromkeys(order))
    return tuple((k, sums[k]) for k in known + sorted(set(sums) - set(known)))


def _split_figure(
    key: str,
    label: str,
    rows: GroupCounts,
    counts: str,
    *,
    by: str,
    position: int,
    order: Iterable[str],
) -> Figure:
    """A counted figure whose value is every row of ``rows`` and whose breakdown (labelled
    ``by``) splits those same rows by the key at ``position`` (`_split`: ``order``'s names
    first, zeros kept): the breakdown always adds up to the value."""
    return Figure(
        key,
        label,
        sum(rows.values()),
        counts,
        breakdown=_split(rows, position, order),
        breakdown_label=by,
    )


LAWFUL_REQUEST_TYPES = tuple(t.value for t in RequestType)
"""The request types (`tidings.safety.lawful_model.RequestType`) lawful requests are counted
by, zeros included."""


_CATEGORIES = [c.value for c in Category]
_SOURCES = [s.value for s in CaseSource]
_ENFORCEMENTS = [k.value for k in EnforcementKind]
_DECISIONS = [k.value for k in DecisionKind]
_DECISION = ("source", "kind", "status")
_AUDITED = (
    AuditAction.DETECTION_FALSE_CANDIDATE.value,
    AuditAction.DETECTION_WINDOW_OVER_BOUND.value,
    AuditAction.REFERRAL_SUBMITTED.value,
    AuditAction.REFERRAL_RETRACT.value,
)


def build_report(
    sources: TransparencySources, period: Period, *, generated_ms: int
) -> TransparencyReport:
    """The report of ``period`` from ``sources`` (module docstring; each figure's ``counts``
    says what it counts). Reads only; raises whatever the repositories raise."""
    start, end = period.start_ms, period.end_ms
    reports = sources.reports.count_reports(start, end)
    cases = sources.cases.count_cases(start, end)
    decisions = sources.cases.count_decisions(start, end)
    filed = sources.cases.count_appeals_filed(start, end)
    decided = sources.cases.count_appeals_decided(start, end)
    applied = sources.enforcements.count_enforcements(start, end)
    revoked = sources.enforcements.count_revocations(start, end)
    audited = sources.audit.count_actions(start, end, _AUDITED)
    matched = sources.detection.count_matches(start, end) if sources.detection else {}
    holds = sources.holds.count_placed(start, end) if sources.holds else {}
    lawful = sources.lawful.count_received(start, end) if sources.lawful else {}
    refused = sources.refusals.count_refused(start, end) if sources.refusals else {}

    final = DecisionStatus.FINAL.value

    def settled(source: str | Sequence[str], kind: str | Sequence[str]) -> int:
        return _total(decisions, _DECISION, source=source, kind=kind, status=final)

    enforcing = [k for k in _DECISIONS if k != DecisionKind.DISMISS.value]
    detection = CaseSource.DETECTION.value
    report_sections = (
        Section(
            "reports",
            "User reports",
            (
                Figure(
                    "received",
                    "Reports received",
                    sum(reports.values()) + sum(refused.values()),
                    "Every report submitted and checked: those verified and accepted plus "
                    "those refused by verification.",
                ),
                _split_figure(
                    "verified",
                    "Reports verified and accepted",
                    reports,
                    "Reports whose message franking, context chain and attachments verified "
                    "and were stored, by the time received (safety_reports.received_ms).",
                    by="category", position=0, order=_CATEGORIES,
                ),
                _split_figure(
                    "refused",
                    "Reports refused",
                    refused,
                    "Reports refused by verification, by reason (the refusal's error code), "
                    "counted per UTC day (safety_report_refusals): only the count is kept, "
                    "nothing of the report.",
                    by="reason", position=0, order=REFUSAL_REASONS,
                ),
                Figure(
                    "voided",
                    "Verified reports later voided (bad-faith reporter)",
                    sum(n for (_, status), n in reports.items() if status == ReportStatus.VOIDED),
                    "Of the verified reports received in the period, those voided since "
                    "because their reporter was found to report in bad faith.",
                ),
            ),
        ),
        Section(
            "cases",
            "Cases",
            (
                _split_figure(
                    "opened",
                    "Cases opened",
                    cases,
                    "Cases opened in the period (safety_cases.created_ms), by what opened "
                    "them: user reports or a hash-bank detection match.",
                    by="source", position=0, order=_SOURCES,
                ),
                _split_figure(
                    "by_category",
                    "Cases opened, by category",
                    cases,
                    "The same cases by category (the category of the report that opened "
                    "the case; detection cases are child sexual exploitation).",
                    by="category", position=1, order=_CATEGORIES,
                ),
            ),
        ),
        Section(
            "actions",
            "Decisions and enforcement actions",
            (
                Figure(
                    "decisions",
                    "Final decisions",
                    settled(_SOURCES, _DECISIONS),
                    "Decisions that took effect in the period — at the second review for "
                    "bans and referrals, else when made (safety_decisions) — by kind.",
                    breakdown=_split(
                        {k: n for k, n in decisions.items() if k[2] == final}, 1, _DECISIONS
                    ),
                    breakdown_label="kind",
                ),
                Figure(
                    "rejected_at_second_review",
                    "Proposals rejected at second review",
                    _total(decisions, _DECISION, status=DecisionStatus.REJECTED.value),
                    "Ban and referral proposals a second reviewer rejected in the period.",
                ),
                _split_figure(
                    "enforcements",
                    "Enforcement actions",
                    applied,
                    "Enforcements applied to accounts in the period "
                    "(account_enforcements.created_ms), by type.",
                    by="type", position=0, order=_ENFORCEMENTS,
                ),
            ),
        ),
        Section(
            "appeals",
            "Appeals and reversals",
            (
                _split_figure(
                    "filed",
                    "Appeals filed",
                    filed,
                    "Appeals the affected accounts filed in the period (safety_appeals."
                    "filed_ms), by where they stand now.",
                    by="status", position=0, order=[s.value for s in AppealStatus],
                ),
                _split_figure(
                    "decided",
                    "Appeals decided",
                    decided,
                    "Appeals decided in the period (safety_appeals.decided_ms), by outcome.",
                    by="outcome",
                    position=0,
                    order=[AppealStatus.UPHELD.value, AppealStatus.OVERTURNED.value],
                ),
                _split_figure(
                    "reversals",
                    "Enforcement actions reversed",
                    revoked,
                    "Enforcements lifted in the period because an appeal overturned their "
                    "decision (account_enforcements.revoked_ms), by type.",
                    by="type", position=0, order=_ENFORCEMENTS,
                ),
            ),
        ),
        Section(
            "detection",
            "Detection of known child sexual abuse imagery",
            (
                Figure(
                    "matches",
                    "Images matched",
                    sum(matched.values()),
                    "Images recovered from threshold vouchers and confirmed by the server "
                    "in the clear against the hash banks (safety_detection_matches."
                    "matched_ms; each also audited as detection.match).",
                ),
                Figure(
                    "false_candidates",
                    "False candidates",
                    audited.get((AuditAction.DETECTION_FALSE_CANDIDATE.value,), 0),
                    "Images recovered whose server-side hash did not match: never a case "
                    "(audit log, detection.false_candidate).",
                ),
                Figure(
                    "cases_opened",
                    "Detection cases opened",
                    sum(n for (source, _), n in cases.items() if source == detection),
                    "Cases opened by a detection match (safety_cases.source = detection).",
                ),
                Figure(
                    "confirmed",
                    "Matches confirmed by human review",
                    settled(detection, enforcing),
                    "Final decisions on detection cases that found a violation (any kind "
                    "but dismiss), by kind.",
                    breakdown=_split(
                        {
                            k: n
                            for k, n in decisions.items()
                            if k[0] == detection and k[2] == final and k[1] in enforcing
                        },
                        1,
                        enforcing,
                    ),
                    breakdown_label="kind",
                ),
                Figure(
                    "dismissed",
                    "Matches dismissed by human review",
                    settled(detection, DecisionKind.DISMISS.value),
                    "Final dismissals of detection cases (the reviewer found no violation).",
                ),
                Figure(
                    "windows_over_bound",
                    "Voucher windows over the synthetic bound",
                    audited.get((AuditAction.DETECTION_WINDOW_OVER_BOUND.value,), 0),
                    "Device windows with more opened vouchers than an honest client sends "
                    "(a modified client), recorded and left (detection.window_over_bound).",
                ),
            ),
        ),
        Section(
            "referrals",
            "Referrals to the clearinghouse (NCMEC CyberTipline)",
            (
                Figure(
                    "escalated",
                    "Cases escalated for referral",
                    settled(_SOURCES, DecisionKind.ESCALATE_REFERRAL.value),
                    "Final escalate-to-referral decisions (two reviewers), by case source.",
                    breakdown=_split(
                        {
                            k: n
                            for k, n in decisions.items()
                            if k[1] == DecisionKind.ESCALATE_REFERRAL.value and k[2] == final
                        },
                        0,
                        _SOURCES,
                    ),
                    breakdown_label="source",
                ),
                Figure(
                    "submitted",
                    "Referrals submitted",
                    audited.get((AuditAction.REFERRAL_SUBMITTED.value,), 0),
                    "Reports finished at the CyberTipline in the period "
                    "(referral.submitted in the audit log).",
                ),
                Figure(
                    "retracted",
                    "Referrals retracted",
                    audited.get((AuditAction.REFERRAL_RETRACT.value,), 0),
                    "Referrals retracted or withdrawn by legal (referral.retract).",
                ),
                Figure(
                    "accounts_held",
                    "Accounts put under a one-year hold by a referral",
                    holds.get(("referral",), 0),
                    "Preservation holds a finished referral placed (safety_holds.kind = "
                    "referral, by placed_ms).",
                ),
            ),
        ),
        Section(
            "lawful_requests",
            "Requests from authorities",
            (
                _split_figure(
                    "received",
                    "Lawful requests received",
                    lawful,
                    "Requests from authorities recorded in the period (safety_lawful_requests."
                    "received_ms), by type.",
                    by="type", position=0, order=LAWFUL_REQUEST_TYPES,
                ),
                _split_figure(
                    "by_country",
                    "Lawful requests by country",
                    lawful,
                    "The same requests by the requesting authority's country (ISO 3166).",
                    by="country", position=1, order=(),
                ),
                _split_figure(
                    "data_produced",
                    "Requests where data was produced",
                    {k: n for k, n in lawful.items() if k[2] == "yes"},
                    "Of the requests received in the period, those for which a production "
                    "package was made (scoped against the data inventory), by type.",
                    by="type", position=0, order=LAWFUL_REQUEST_TYPES,
                ),
                Figure(
                    "preservation",
                    "Preservation requests",
                    holds.get(("preservation_request",), 0),
                    "Holds legal placed for a law-enforcement preservation request "
                    "(safety_holds.kind = preservation_request, by placed_ms).",
                ),
                Figure(
                    "emergency",
                    "Emergency disclosure requests",
                    sum(n for k, n in lawful.items() if k[0] == RequestType.EMERGENCY.value),
                    "Requests under imminent risk of death or serious injury (their own fast "
                    "path, each with a recorded justification).",
                ),
                Figure(
                    "non_disclosure_orders",
                    "Non-disclosure orders",
                    sum(n for k, n in lawful.items() if k[3] == "yes"),
                    "Requests received in the period that came with an order delaying the "
                    "user's notice (the notice goes out when it ends).",
                ),
            ),
        ),
    )
    return TransparencyReport(period, generated_ms, report_sections)
