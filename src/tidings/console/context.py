"""What the console needs from the safety layer, in one place.

The console never reaches into repositories for anything the domain services already answer;
it needs a few read-only lookups the services do not offer (staff names, the staff list,
appeals of a decision, an account's enforcement history), which come from the repositories.

`ConsoleContext.from_service` adapts a `tidings.safety.service.SafetyService` (or any object
with the same attribute names) so `tidings.app` can pass whatever it built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidings.safety.audit import AuditLog
from tidings.safety.banks import BankService
from tidings.safety.cases import (
    DEFAULT_POLICIES,
    CaseRepository,
    CaseService,
    Enforcement,
    Policy,
)
from tidings.safety.categories import DEFAULT_QUEUES, Queue
from tidings.safety.evidence import EvidenceVault
from tidings.safety.holds import HoldService
from tidings.safety.inventory import RetentionSettings
from tidings.safety.lawful import LawfulRequestService
from tidings.safety.referrals import ReferralService
from tidings.safety.staff import StaffAccount, StaffRepository, StaffService
from tidings.safety.transparency import TransparencySources

__all__ = ["ConsoleContext"]


def _no_enforcements(_: str) -> list[Enforcement]:
    return []


def _no_matches(_: str) -> list[Any]:
    return []


@dataclass(frozen=True, slots=True)
class ConsoleContext:
    """The safety services and lookups the console uses (all synchronous).

    ``list_staff`` returns every staff account (the staff page); ``enforcement_history``
    returns every enforcement of an account (the case page's account history);
    ``detection_matches`` the confirmed detection images of a case
    (`tidings.safety.detection.DetectionService.matches_for_case`); ``banks`` is the
    hash-bank service (None: the bank pages answer 404); ``transparency`` the repositories'
    aggregates the transparency report counts from (None: that page answers 404);
    ``referrals`` the referral service (None: the referral pages answer 404); ``holds`` the
    preservation-hold service (None: the holds page answers 404); ``lawful`` the
    lawful-request service (None: the lawful-request pages answer 404).
    """

    staff: StaffService
    cases: CaseService
    vault: EvidenceVault
    audit: AuditLog
    staff_repo: StaffRepository
    case_repo: CaseRepository
    list_staff: Callable[[], Sequence[StaffAccount]]
    enforcement_history: Callable[[str], Sequence[Enforcement]] = _no_enforcements
    detection_matches: Callable[[str], Sequence[Any]] = _no_matches
    queues: Mapping[str, Queue] = field(default_factory=lambda: dict(DEFAULT_QUEUES))
    policies: Mapping[str, Policy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    banks: BankService | None = None
    retention: RetentionSettings | None = None
    transparency: TransparencySources | None = None
    holds: HoldService | None = None
    referrals: ReferralService | None = None
    lawful: LawfulRequestService | None = None

    @classmethod
    def from_service(cls, service: object) -> ConsoleContext:
        """A context from a `ConsoleContext` (returned as is) or a safety-service facade
        exposing ``staff``, ``cases``, ``vault``, ``audit``, the repositories ``staff_repo`` /
        ``case_repo`` (and optionally ``enforcement_repo``, ``detection``, ``banks``,
        ``holds``, ``referrals``, ``lawful`` and ``repos``, the repositories the transparency
        report counts from), and ``list_staff`` (or a staff repository that has it).

        Raises:
            TypeError: a required attribute is missing.
        """
        if isinstance(service, ConsoleContext):
            return service

        def attr(name: str, required: bool = True) -> object:
            value = getattr(service, name, None)
            if value is None and required:
                raise TypeError(f"the safety service has no {name!r}")
            return value

        staff_repo = attr("staff_repo")
        case_repo = attr("case_repo")
        enforcement_repo = attr("enforcement_repo", required=False)
        list_staff = attr("list_staff", required=False) or getattr(staff_repo, "list_staff", None)
        if list_staff is None:
            raise TypeError("the safety service cannot list staff accounts")
        history: Callable[[str], Sequence[Enforcement]] = _no_enforcements
        if enforcement_repo is not None:
            history = enforcement_repo.enforcements_for_account  # type: ignore[attr-defined]
        detection = attr("detection", required=False)
        matches: Callable[[str], Sequence[Any]] = _no_matches
        if detection is not None:
            matches = detection.matches_for_case  # type: ignore[attr-defined]
        queues = attr("queues", required=False)
        policies = attr("policies", required=False)
        banks = attr("banks", required=False)
        retention = attr("retention", required=False)
        sources = (
            TransparencySources.of(service)
            if getattr(service, "repos", None) is not None
            else None
        )
        holds = attr("holds", required=False)
        referrals = attr("referrals", required=False)
        lawful = attr("lawful", required=False)
        return cls(
            staff=attr("staff"),  # type: ignore[arg-type]
            cases=attr("cases"),  # type: ignore[arg-type]
            vault=attr("vault"),  # type: ignore[arg-type]
            audit=attr("audit"),  # type: ignore[arg-type]
            staff_repo=staff_repo,  # type: ignore[arg-type]
            case_repo=case_repo,  # type: ignore[arg-type]
            list_staff=list_staff,  # type: ignore[arg-type]
            enforcement_history=history,
            detection_matches=matches,
            queues=queues if isinstance(queues, Mapping) else dict(DEFAULT_QUEUES),
            policies=policies if isinstance(policies, Mapping) else dict(DEFAULT_POLICIES),
            banks=banks if isinstance(banks, BankService) else None,
            retention=retention if isinstance(retention, RetentionSettings) else None,
            transparency=sources,
            holds=holds if isinstance(holds, HoldService) else None,
            referrals=referrals if isinstance(referrals, ReferralService) else None,
            lawful=lawful if isinstance(lawful, LawfulRequestService) else None,
        )
