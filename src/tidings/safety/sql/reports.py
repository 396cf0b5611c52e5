"""Reports, reported items, replay keys and sealed evidence (`SqlReportRepository`,
`SqlEvidenceRepository`). `SqlReportRepository.store_verified_report` is one transaction
(report, items, evidence, replay keys, bank matches) and the replay keys are a primary key,
so two copies of one report cannot both be stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError, MessageAlreadyReportedError, ReportReplayError
from tidings.safety.bank_match import entries_from_text, entries_text
from tidings.safety.evidence import EvidenceRecord
from tidings.safety.memory_rows import GroupCounts
from tidings.safety.reports import (
    ReplayKey,
    ReplayKind,
    ReportedItemRecord,
    ReportMatch,
    ReportRecord,
)
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, during, insert_row
from tidings.storage.engine import record_from_row, record_values
from tidings.storage.safety_schema import (
    safety_evidence,
    safety_report_items,
    safety_report_matches,
    safety_report_replay,
    safety_reports,
)

__all__ = ["SqlEvidenceRepository", "SqlReportRepository"]


def _item_values(item: ReportedItemRecord) -> dict[str, Any]:
    return record_values(item, renamed={"index": "idx"})


def _item(row: Row[Any]) -> ReportedItemRecord:
    return record_from_row(ReportedItemRecord, row, index=row.idx)


def _match_values(match: ReportMatch) -> dict[str, Any]:
    return record_values(match, entries=entries_text(match.entries))


def _match(row: Row[Any]) -> ReportMatch:
    return record_from_row(ReportMatch, row, entries=entries_from_text(row.entries))


def _raise_replay(kinds: set[ReplayKind]) -> None:
    if ReplayKind.REPORT in kinds:
        raise ReportReplayError()
    if ReplayKind.MESSAGE in kinds:
        raise MessageAlreadyReportedError()


class SqlReportRepository:
    """`tidings.safety.reports.ReportRepository` on ``safety_reports``, ``safety_report_items``
    and ``safety_report_replay`` (evidence rows go to ``safety_evidence``, the attachments'
    bank matches to ``safety_report_matches``, in the same transaction)."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db
        self._reports = RecordTable(db, safety_reports, "report_id", ReportRecord)
        # Keyed by (report_id, idx): only read here through `RecordTable.where`.
        self._items = RecordTable(
            db,
            safety_report_items,
            "report_id",
            ReportedItemRecord,
            decode=_item,
            encode=_item_values,
        )
        self._matches = RecordTable(
            db,
            safety_report_matches,
            "report_id",
            ReportMatch,
            decode=_match,
            encode=_match_values,
        )

    def seen_replay_keys(self, keys: Sequence[str]) -> list[ReplayKey]:
        if not keys:
            return []
        with self._db.read() as c:
            rows = c.execute(
                select(safety_report_replay).where(safety_report_replay.c.key.in_(list(keys)))
            ).all()
        return [ReplayKey(r.key, ReplayKind(r.kind)) for r in rows]

    def store_verified_report(
        self,
        report: ReportRecord,
        items: Sequence[ReportedItemRecord],
        evidence: Sequence[EvidenceRecord],
        replay: Sequence[ReplayKey],
        matches: Sequence[ReportMatch] = (),
    ) -> None:
        try:
            with self._db.write() as c:
                seen = c.execute(
                    select(safety_report_replay.c.kind).where(
                        safety_report_replay.c.key.in_([k.key for k in replay])
                    )
                ).all()
                _raise_replay({ReplayKind(r.kind) for r in seen})
                insert_row(c, safety_reports, record_values(report))
                if items:
                    c.execute(insert(safety_report_items), [_item_values(i) for i in items])
                if evidence:
                    c.execute(insert(safety_evidence), [record_values(e) for e in evidence])
                if matches:
                    c.execute(insert(safety_report_matches), [_match_values(m) for m in matches])
                c.execute(
                    insert(safety_report_replay),
                    [
                        {"key": k.key, "kind": k.kind.value, "report_id": report.report_id}
                        for k in replay
                    ],
                )
        except IntegrityError:
            # A concurrent copy won the race (or the ids collided): nothing of ours is stored.
            seen_keys = self.seen_replay_keys([k.key for k in replay])
            _raise_replay({k.kind for k in seen_keys})
            raise ConflictError("report id exists") from None

    def get_report(self, report_id: str) -> ReportRecord | None:
        return self._reports.get(report_id)

    def update_report(self, report: ReportRecord) -> None:
        self._reports.update(report)

    def _reports_where(self, condition: ColumnElement[bool]) -> list[ReportRecord]:
        r = safety_reports.c
        return self._reports.where(condition, r.received_ms, r.report_id)

    def reports_for_case(self, case_id: str) -> list[ReportRecord]:
        return self._reports_where(safety_reports.c.case_id == case_id)

    def reports_by_reporter(self, reporter: str) -> list[ReportRecord]:
        return self._reports_where(safety_reports.c.reporter == reporter)

    def items_for_report(self, report_id: str) -> list[ReportedItemRecord]:
        i = safety_report_items.c
        return self._items.where(i.report_id == report_id, i.idx)

    def matches_for_report(self, report_id: str) -> list[ReportMatch]:
        m = safety_report_matches.c
        return self._matches.where(m.report_id == report_id, m.item_index, m.attachment_index)
    def count_reports(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Stored (verified) reports received in ``[start_ms, end_ms)``, keyed ``(category,
        status)``: one GROUP BY (`tidings.safety.transparency`)."""
        r = safety_reports.c
        return self._reports.count_by(during(r.received_ms, start_ms, end_ms), r.category, r.status)


class SqlEvidenceRepository:
    """`tidings.safety.evidence.EvidenceRepository` on ``safety_evidence``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db
        self._rows = RecordTable(db, safety_evidence, "evidence_id", EvidenceRecord)

    def _select(
        self, condition: ColumnElement[bool], limit: int | None = None
    ) -> list[EvidenceRecord]:
        return self._rows.where(condition, safety_evidence.c.evidence_id, limit=limit)

    def get_evidence(self, evidence_id: str) -> EvidenceRecord | None:
        return self._rows.get(evidence_id)

    def evidence_for_report(self, report_id: str) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.report_id == report_id)

    def evidence_not_under_key(self, key_id: str, limit: int) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.key_id != key_id, limit)

    def replace_evidence(self, record: EvidenceRecord, expected_key_id: str) -> None:
        self._rows.update(
            record,
            safety_evidence.c.key_id == expected_key_id,
            conflict="evidence changed concurrently",
        )

    def set_hold(self, evidence_id: str, hold_until_ms: int) -> None:
        with self._db.write() as c:
            c.execute(
                update(safety_evidence)
                .where(safety_evidence.c.evidence_id == evidence_id)
                .values(hold_until_ms=hold_until_ms)
            )

    def expired_evidence(self, now_ms: int, limit: int) -> list[EvidenceRecord]:
        e = safety_evidence.c
        return self._select(
            and_(e.expires_ms <= now_ms, e.hold_until_ms <= now_ms),
            limit,
        )

    def delete_evidence(self, evidence_id: str) -> None:
        self._rows.delete(safety_evidence.c.evidence_id == evidence_id)
