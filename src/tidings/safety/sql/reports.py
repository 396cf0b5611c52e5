"""Reports, reported items, replay keys and sealed evidence (`SqlReportRepository`,
`SqlEvidenceRepository`). `SqlReportRepository.store_verified_report` is one transaction
(report, items, evidence, replay keys) and the replay keys are a primary key, so two copies of
one report cannot both be stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError, MessageAlreadyReportedError, ReportReplayError
from tidings.safety.categories import Category, ConversationKind
from tidings.safety.evidence import EvidenceRecord
from tidings.safety.reports import (
    ItemRole,
    ReplayKey,
    ReplayKind,
    ReportedItemRecord,
    ReportRecord,
    ReportStatus,
)
from tidings.safety.sql.engine import SafetyDatabase, insert_row
from tidings.storage.safety_schema import (
    safety_evidence,
    safety_report_items,
    safety_report_replay,
    safety_reports,
)

__all__ = ["SqlEvidenceRepository", "SqlReportRepository"]


def _report_values(r: ReportRecord) -> dict[str, Any]:
    return {
        "report_id": r.report_id,
        "reporter": r.reporter,
        "reporter_device": r.reporter_device,
        "subject": r.subject,
        "subject_device": r.subject_device,
        "category": r.category.value,
        "conversation_kind": r.conversation_kind.value,
        "conversation_id": r.conversation_id,
        "reported_message_id": r.reported_message_id,
        "received_ms": r.received_ms,
        "item_count": r.item_count,
        "attachment_count": r.attachment_count,
        "status": r.status.value,
        "case_id": r.case_id,
        "voided_ms": r.voided_ms,
    }


def _report(row: Row[Any]) -> ReportRecord:
    return ReportRecord(
        report_id=row.report_id,
        reporter=row.reporter,
        reporter_device=row.reporter_device,
        subject=row.subject,
        subject_device=row.subject_device,
        category=Category(row.category),
        conversation_kind=ConversationKind(row.conversation_kind),
        conversation_id=bytes(row.conversation_id),
        reported_message_id=bytes(row.reported_message_id),
        received_ms=row.received_ms,
        item_count=row.item_count,
        attachment_count=row.attachment_count,
        status=ReportStatus(row.status),
        case_id=row.case_id,
        voided_ms=row.voided_ms,
    )


def _item(row: Row[Any]) -> ReportedItemRecord:
    return ReportedItemRecord(
        report_id=row.report_id,
        index=row.idx,
        role=ItemRole(row.role),
        message_id=bytes(row.message_id),
        commitment=bytes(row.commitment),
        sender=row.sender,
        sender_device=row.sender_device,
        recipient=row.recipient,
        recipient_device=row.recipient_device,
        server_timestamp_ms=row.server_timestamp_ms,
        franking_key_id=row.franking_key_id,
        franking_verified=bool(row.franking_verified),
        chain_verified=bool(row.chain_verified),
        attachments_verified=row.attachments_verified,
    )


def _evidence_values(e: EvidenceRecord) -> dict[str, Any]:
    return {
        "evidence_id": e.evidence_id,
        "report_id": e.report_id,
        "kind": e.kind,
        "key_id": e.key_id,
        "nonce": e.nonce,
        "ciphertext": e.ciphertext,
        "plaintext_size": e.plaintext_size,
        "child_safety": e.child_safety,
        "created_ms": e.created_ms,
        "expires_ms": e.expires_ms,
        "hold_until_ms": e.hold_until_ms,
    }


def _evidence(row: Row[Any]) -> EvidenceRecord:
    return EvidenceRecord(
        evidence_id=row.evidence_id,
        report_id=row.report_id,
        kind=row.kind,
        key_id=row.key_id,
        nonce=bytes(row.nonce),
        ciphertext=bytes(row.ciphertext),
        plaintext_size=row.plaintext_size,
        child_safety=bool(row.child_safety),
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
        hold_until_ms=row.hold_until_ms,
    )


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
                insert_row(c, safety_reports, _report_values(report))
                if items:
                    c.execute(
                        insert(safety_report_items),
                        [
                            {
                                "report_id": i.report_id,
                                "idx": i.index,
                                "role": i.role.value,
                                "message_id": i.message_id,
                                "commitment": i.commitment,
                                "sender": i.sender,
                                "sender_device": i.sender_device,
                                "recipient": i.recipient,
                                "recipient_device": i.recipient_device,
                                "server_timestamp_ms": i.server_timestamp_ms,
                                "franking_key_id": i.franking_key_id,
                                "franking_verified": i.franking_verified,
                                "chain_verified": i.chain_verified,
                                "attachments_verified": i.attachments_verified,
                            }
                            for i in items
                        ],
                    )
                if evidence:
                    c.execute(insert(safety_evidence), [_evidence_values(e) for e in evidence])
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
        with self._db.read() as c:
            row = c.execute(
                select(safety_reports).where(safety_reports.c.report_id == report_id)
            ).first()
        return _report(row) if row is not None else None

    def update_report(self, report: ReportRecord) -> None:
        values = _report_values(report)
        del values["report_id"]
        with self._db.write() as c:
            c.execute(
                update(safety_reports)
                .where(safety_reports.c.report_id == report.report_id)
                .values(**values)
            )

    def _reports(self, condition: Any) -> list[ReportRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_reports)
                .where(condition)
                .order_by(safety_reports.c.received_ms, safety_reports.c.report_id)
            ).all()
        return [_report(r) for r in rows]

    def reports_for_case(self, case_id: str) -> list[ReportRecord]:
        return self._reports(safety_reports.c.case_id == case_id)

    def reports_by_reporter(self, reporter: str) -> list[ReportRecord]:
        return self._reports(safety_reports.c.reporter == reporter)

    def items_for_report(self, report_id: str) -> list[ReportedItemRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_report_items)
                .where(safety_report_items.c.report_id == report_id)
                .order_by(safety_report_items.c.idx)
            ).all()
        return [_item(r) for r in rows]


class SqlEvidenceRepository:
    """`tidings.safety.evidence.EvidenceRepository` on ``safety_evidence``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def _select(self, condition: Any, limit: int | None = None) -> list[EvidenceRecord]:
        query = select(safety_evidence).where(condition).order_by(safety_evidence.c.evidence_id)
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as c:
            return [_evidence(r) for r in c.execute(query).all()]

    def get_evidence(self, evidence_id: str) -> EvidenceRecord | None:
        found = self._select(safety_evidence.c.evidence_id == evidence_id)
        return found[0] if found else None

    def evidence_for_report(self, report_id: str) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.report_id == report_id)

    def evidence_not_under_key(self, key_id: str, limit: int) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.key_id != key_id, limit)

    def replace_evidence(self, record: EvidenceRecord, expected_key_id: str) -> None:
        values = _evidence_values(record)
        del values["evidence_id"]
        with self._db.write() as c:
            result = c.execute(
                update(safety_evidence)
                .where(
                    safety_evidence.c.evidence_id == record.evidence_id,
                    safety_evidence.c.key_id == expected_key_id,
                )
                .values(**values)
            )
            if result.rowcount != 1:
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
