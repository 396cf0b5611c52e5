"""The shared core of `tidings.safety.cases.CaseService`: construction and helpers."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace

from tidings.errors import (
    CaseLockedError,
    InvalidDecisionError,
    NotFoundError,
)
from tidings.safety.audit import AuditLog, AuditsOneKind
from tidings.safety.case_lifecycle import RELEASE_LOCK, CaseAction, next_state
from tidings.safety.case_model import (
    DEFAULT_POLICIES,
    CaseRecord,
    CaseRepository,
    EnforcementRepository,
    Policy,
)
from tidings.safety.categories import Queue, Router
from tidings.safety.reports import ReportRecord, ReportRepository, ReportStatus
from tidings.safety.staff import Permission, Principal

__all__ = ["CaseCore", "require_text"]


def _default_id() -> str:
    return os.urandom(12).hex()


def require_text(value: object, what: str, limit: int) -> str:
    """``value`` stripped, if it is a non-blank string of at most ``limit`` characters.

    Raises:
        InvalidDecisionError: missing, blank or over-long (``what`` names it in the message).
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidDecisionError(f"a {what} is required")
    if len(value) > limit:
        raise InvalidDecisionError(f"the {what} is longer than {limit} characters")
    return value.strip()


class CaseCore(AuditsOneKind):
    """Repositories, routing and the helpers every part of the case service shares (the
    lifecycle table, the lock check, audit); `CaseService` is the public class."""

    audit_kind = "case"

    def __init__(
        self,
        *,
        cases: CaseRepository,
        reports: ReportRepository,
        enforcements: EnforcementRepository,
        audit: AuditLog,
        router: Router | None = None,
        principals: Callable[[str], Principal],
        policies: Mapping[str, Policy] = DEFAULT_POLICIES,
        id_source: Callable[[], str] = _default_id,
    ) -> None:
        self._cases = cases
        self._reports = reports
        self._enforcements = enforcements
        self._audit = audit
        self._router = router or Router()
        self._principals = principals
        self._policies = policies
        self._ids = id_source

    # --- helpers ------------------------------------------------------------------------------

    def queue(self, queue_id: str) -> Queue:
        try:
            return self._router.queues[queue_id]
        except KeyError:
            raise NotFoundError("no such queue") from None

    def _get(self, case_id: str) -> CaseRecord:
        case = self._cases.get_case(case_id)
        if case is None:
            raise NotFoundError("no such case")
        return case

    def _access(self, principal: Principal, case: CaseRecord, permission: Permission) -> None:
        principal.require(permission)
        principal.require_queue(self.queue(case.queue_id))

    def _save(self, case: CaseRecord, now_ms: int, **changes: object) -> CaseRecord:
        updated = replace(case, version=case.version + 1, updated_ms=now_ms, **changes)  # type: ignore[arg-type]
        self._cases.update_case(updated, case.version)
        return updated

    def _transition(
        self, case: CaseRecord, action: CaseAction, now_ms: int, **changes: object
    ) -> CaseRecord:
        """Move ``case`` by ``action`` (`case_lifecycle.TRANSITIONS`), releasing its lock.

        Raises:
            InvalidCaseStateError: the table has no such move.  ConflictError: a concurrent
            change won.
        """
        state = next_state(case.state, action)
        return self._save(case, now_ms, state=state, **RELEASE_LOCK, **changes)

    def _require_lock(self, principal: Principal, case: CaseRecord, now_ms: int) -> None:
        if case.lock_holder != principal.staff_id or case.lock_expires_ms <= now_ms:
            raise CaseLockedError("claim the case (hold its lock) first")

    def _reporters(self, case_id: str, extra: ReportRecord | None = None) -> tuple[int, int]:
        reports = [
            r for r in self._reports.reports_for_case(case_id) if r.status is ReportStatus.ACCEPTED
        ]
        if extra is not None and all(r.report_id != extra.report_id for r in reports):
            reports.append(extra)
        return len(reports), len({r.reporter for r in reports})
