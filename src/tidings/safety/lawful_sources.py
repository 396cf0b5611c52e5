"""What a lawful production reads (issue 11, docs/operations.md "Lawful requests"): for one
account, the rows of every table the data inventory (`tidings.safety.inventory`) names, keyed
by table and column, from the repositories' own account-, case- and report-scoped queries.

The production then keeps only the columns the inventory lists (`tidings.safety.lawful`);
what is read here is already narrowed so that nothing unlistable is even carried: no envelope
bytes (their length only), no evidence ciphertext (media evidence goes to NCMEC, never into a
package; sealed bytes are useless to a requester), no reviewers' notes, no credential hashes.

Reports produced are those *about* the account (attached to its cases: it is the reported
party); reports the account filed about others are the other accounts' records. Pure reads:
nothing is changed, and a repository's error propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tidings.safety.case_model import CaseRepository
from tidings.safety.detection_model import DetectionRepository
from tidings.safety.evidence import EvidenceRecord, EvidenceRepository
from tidings.safety.holds import SubjectRecords
from tidings.safety.referral_records import ReferralRepository
from tidings.safety.reports import ReportRepository
from tidings.wire.base64url import b64e

__all__ = ["DETECTION_EVIDENCE", "PRODUCED_TABLES", "ProductionSources"]

PRODUCED_TABLES = (
    "devices", "one_time_prekeys", "kem_prekeys", "messages",
    "safety_reports", "safety_report_items", "safety_report_matches", "safety_evidence",
    "safety_cases", "safety_decisions", "safety_appeals",
    "safety_detection_matches", "safety_referrals",
)
"""The tables `ProductionSources.read` fills (with the subject records, holds and
enforcements `tidings.safety.lawful` reads itself). A table two categories share is keyed
``table:category`` for the rows of one of them (`DETECTION_EVIDENCE`): the sealed images of
detection are the detection category's, not the reports'."""

DETECTION_EVIDENCE = "safety_evidence:detection"


def _plain(value: Any) -> Any:
    """JSON-ready: bytes as base64url, tuples as lists, enums as their value."""
    if isinstance(value, bytes):
        return b64e(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return getattr(value, "value", value)


def _row(record: Any, **renamed: str) -> dict[str, Any]:
    """A dataclass record as a row (``renamed``: attribute -> column)."""
    return {renamed.get(k, k): _plain(v) for k, v in asdict(record).items()}


def _evidence(record: EvidenceRecord) -> dict[str, Any]:
    # Listed by id, kind and size only: never the nonce, key id or ciphertext.
    return {"evidence_id": record.evidence_id, "report_id": record.report_id,
            "kind": record.kind, "plaintext_size": record.plaintext_size,
            "child_safety": record.child_safety, "created_ms": record.created_ms}


@dataclass(frozen=True, slots=True)
class ProductionSources:
    """The repositories a production reads beyond subject records, holds and enforcements;
    ``detection`` None when the node runs no detection (no rows, nothing to produce)."""

    subjects: SubjectRecords
    cases: CaseRepository
    reports: ReportRepository
    evidence: EvidenceRepository
    referrals: ReferralRepository
    detection: Callable[[], DetectionRepository | None]

    def read(self, account: str) -> dict[str, list[dict[str, Any]]]:
        """``account``'s rows of every table in `PRODUCED_TABLES` (see the module
        docstring for what is never read)."""
        out: dict[str, list[dict[str, Any]]] = {
            t: [] for t in (*PRODUCED_TABLES, DETECTION_EVIDENCE)
        }
        out.update(self.subjects.production_rows(account))
        detection = self.detection()
        for case in self.cases.cases_for_subject(account):
            out["safety_cases"].append(_row(case))
            for decision in self.cases.decisions_for_case(case.case_id):
                row = _row(decision)
                row.pop("second_review_reason", None)  # the second reviewer's deliberation
                out["safety_decisions"].append(row)
                out["safety_appeals"].extend(
                    _row(a) for a in self.cases.appeals_for_decision(decision.decision_id)
                )
            for report in self.reports.reports_for_case(case.case_id):
                out["safety_reports"].append(_row(report))
                out["safety_report_items"].extend(
                    _row(i, index="idx") for i in self.reports.items_for_report(report.report_id)
                )
                out["safety_report_matches"].extend(
                    _row(m) for m in self.reports.matches_for_report(report.report_id)
                )
                out["safety_evidence"].extend(
                    _evidence(r) for r in self.evidence.evidence_for_report(report.report_id)
                )
            for match in [] if detection is None else detection.matches_for_case(case.case_id):
                out["safety_detection_matches"].append(_row(match))
                found = self.evidence.get_evidence(match.evidence_id)
                if found is not None:
                    out[DETECTION_EVIDENCE].append(_evidence(found))
            out["safety_referrals"].extend(
                _row(r) for r in self.referrals.referrals_for_case(case.case_id)
            )
        return out
