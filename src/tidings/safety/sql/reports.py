"""Reports, reported items, replay keys and sealed evidence (`SqlReportRepository`,
`SqlEvidenceRepository`). `SqlReportRepository.store_verified_report` is one transaction
(report, items, evidence, replay keys) and the replay keys are a primary key, so two copies of
one report cannot both be stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError, MessageAlreadyReportedError, ReportReplayError
from tidings.safety.evidence import EvidenceRecord
from tidings.safety.reports import ReplayKey, ReplayKind, ReportedItemRecord, ReportRecord
from tidings.safety.sql.engine import SafetyDatabase, insert_row, update_row
from tidings.storage.engine import record_from_row, record_values
from tidings.storage.safety_schema import (
    safety_evidence,
    safety_report_items,
    safety_report_replay,
    safety_reports,
)

__all__ = ["SqlEvidenceRepository", "SqlReportRepository"]


def _report(row: Row[Any]) -> ReportRecord:
    return record_from_row(ReportRecord, row)


def _item_values(item: ReportedItemRecord) -> dict[str, Any]:
    return record_values(item, renamed={"index": "idx"})


def _item(row: Row[Any]) -> ReportedItemRecord:
    return record_from_row(ReportedItemRecord, row, index=row.idx)


def _evidence(row: Row[Any]) -> EvidenceRecord:
    return record_from_row(EvidenceRecord, row)


def _raise_replay(kinds: set[ReplayKind]) -> None:
    if ReplayKind.REPORT in kinds:
        raise ReportReplayError()
    if ReplayKind.MESSAGE in kinds:
        raise MessageAlreadyReportedError()


class SqlReportRepository:
    """`tidings.safety.reports.ReportRepository` on ``safety_reports``, ``safety_report_items``
    and ``safety_report_replay`` (evidence rows go to ``safety_evidence`` in the same
    transaction)."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

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
        query = select(safety_reports).where(safety_reports.c.report_id == report_id)
        return self._db.first(query, _report)

    def update_report(self, report: ReportRecord) -> None:
        with self._db.write() as c:
            update_row(c, safety_reports, "report_id", record_values(report))

    def _reports(self, condition: Any) -> list[ReportRecord]:
        query = (
            select(safety_reports)
            .where(condition)
            .order_by(safety_reports.c.received_ms, safety_reports.c.report_id)
        )
        return self._db.all(query, _report)

    def reports_for_case(self, case_id: str) -> list[ReportRecord]:
        return self._reports(safety_reports.c.case_id == case_id)

    def reports_by_reporter(self, reporter: str) -> list[ReportRecord]:
        return self._reports(safety_reports.c.reporter == reporter)

    def items_for_report(self, report_id: str) -> list[ReportedItemRecord]:
        query = (
            select(safety_report_items)
            .where(safety_report_items.c.report_id == report_id)
            .order_by(safety_report_items.c.idx)
        )
        return self._db.all(query, _item)

    def count_reports(self) -> int:
        with self._db.read() as c:
            return int(c.execute(select(func.count()).select_from(safety_reports)).scalar_one())


class SqlEvidenceRepository:
    """`tidings.safety.evidence.EvidenceRepository` on ``safety_evidence``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def _select(self, condition: Any, limit: int | None = None) -> list[EvidenceRecord]:
        query = select(safety_evidence).where(condition).order_by(safety_evidence.c.evidence_id)
        if limit is not None:
            query = query.limit(limit)
        return self._db.all(query, _evidence)

    def get_evidence(self, evidence_id: str) -> EvidenceRecord | None:
        found = self._select(safety_evidence.c.evidence_id == evidence_id)
        return found[0] if found else None

    def evidence_for_report(self, report_id: str) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.report_id == report_id)

    def evidence_not_under_key(self, key_id: str, limit: int) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.key_id != key_id, limit)

    def replace_evidence(self, record: EvidenceRecord, expected_key_id: str) -> None:
        with self._db.write() as c:
            changed = update_row(
                c,
                safety_evidence,
                "evidence_id",
                record_values(record),
                safety_evidence.c.key_id == expected_key_id,
            )
            if changed != 1:
                raise ConflictError("evidence changed concurrently")

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
        with self._db.write() as c:
            c.execute(delete(safety_evidence).where(safety_evidence.c.evidence_id == evidence_id))
