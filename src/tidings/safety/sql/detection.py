"""`SqlDetectionRepository`: `tidings.safety.detection_model.DetectionRepository` on the
``safety_detection_*`` tables (`tidings.storage.detection_schema`).

Transactions: `finish_pending` deletes the pending voucher and stores its opened record in
one (a voucher another node finished first leaves this one's work unstored); `store_match`
stores the sealed evidence row, the match and the opened record's outcome in one, and the
unique ``opened_id`` keeps one match per image when two nodes confirm it together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Row, and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.safety.bank_match import entries_from_text, entries_text
from tidings.safety.detection_model import (
    DetectionMatch,
    ListRecord,
    OpenedRecord,
    Outcome,
    PendingVoucher,
    WindowKey,
)
from tidings.safety.evidence import EvidenceRecord
from tidings.safety.memory_rows import GroupCounts
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, during, insert_row
from tidings.storage.detection_schema import (
    safety_detection_lists,
    safety_detection_matches,
    safety_detection_opened,
    safety_detection_pending,
)
from tidings.storage.engine import record_from_row, record_values
from tidings.storage.safety_schema import safety_evidence

__all__ = ["SqlDetectionRepository"]


def _match_values(match: DetectionMatch) -> dict[str, Any]:
    return record_values(match, entries=entries_text(match.entries))


def _match(row: Row[Any]) -> DetectionMatch:
    return record_from_row(DetectionMatch, row, entries=entries_from_text(row.entries))


class SqlDetectionRepository:
    """See the module docstring."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db
        self._lists = RecordTable(db, safety_detection_lists, "version", ListRecord)
        self._pending = RecordTable(db, safety_detection_pending, "voucher_id", PendingVoucher)
        self._opened = RecordTable(db, safety_detection_opened, "opened_id", OpenedRecord)
        self._matches = RecordTable(
            db,
            safety_detection_matches,
            "match_id",
            DetectionMatch,
            decode=_match,
            encode=_match_values,
        )

    def add_list(self, record: ListRecord) -> None:
        self._lists.insert(record, conflict="list version exists")

    def current_list(self) -> ListRecord | None:
        return self._db.first(
            select(safety_detection_lists)
            .order_by(safety_detection_lists.c.version.desc())
            .limit(1),
            self._lists.decode,
        )

    def get_list(self, version: int) -> ListRecord | None:
        return self._lists.get(version)

    def add_pending(self, voucher: PendingVoucher) -> None:
        self._pending.insert(voucher, conflict="voucher id exists")

    def claim_pending(self, *, now_ms: int, lease_ms: int, limit: int) -> list[PendingVoucher]:
        p = safety_detection_pending.c
        claimed: list[PendingVoucher] = []
        with self._db.write() as c:
            rows = c.execute(
                select(safety_detection_pending)
                .where(p.claimed_until_ms <= now_ms)
                .order_by(p.claimed_until_ms, p.voucher_id)
                .limit(limit)
            ).all()
            for row in rows:
                # Per row, re-checking the claim: under PostgreSQL's READ COMMITTED another
                # node's claim committed meanwhile makes this update match nothing.
                changed = c.execute(
                    update(safety_detection_pending)
                    .where(p.voucher_id == row.voucher_id, p.claimed_until_ms <= now_ms)
                    .values(claimed_until_ms=now_ms + lease_ms)
                ).rowcount
                if changed == 1:
                    record = self._pending.decode(row)
                    claimed.append(replace(record, claimed_until_ms=now_ms + lease_ms))
        return claimed

    def finish_pending(self, voucher_id: str, opened: OpenedRecord | None) -> bool:
        with self._db.write() as c:
            gone = c.execute(
                delete(safety_detection_pending).where(
                    safety_detection_pending.c.voucher_id == voucher_id
                )
            ).rowcount
            if gone != 1:
                return False
            if opened is not None:
                insert_row(c, safety_detection_opened, record_values(opened))
        return True

    def pending_count(self) -> int:
        return self._pending.count()

    def windows_to_evaluate(self, limit: int) -> list[WindowKey]:
        o = safety_detection_opened.c
        query = (
            select(o.account, o.device_id, o.window_id)
            .where(o.evaluated.is_(False))
            .group_by(o.account, o.device_id, o.window_id)
            .order_by(o.account, o.device_id, o.window_id)
            .limit(limit)
        )
        return self._db.all(query, lambda r: WindowKey(r.account, r.device_id, bytes(r.window_id)))

    def opened_for_window(self, window: WindowKey) -> list[OpenedRecord]:
        o = safety_detection_opened.c
        return self._opened.where(
            (o.account == window.account)
            & (o.device_id == window.device_id)
            & (o.window_id == window.window_id),
            o.opened_id,
        )

    def mark_evaluated(self, opened_ids: Sequence[str]) -> None:
        if not opened_ids:
            return
        with self._db.write() as c:
            c.execute(
                update(safety_detection_opened)
                .where(safety_detection_opened.c.opened_id.in_(list(opened_ids)))
                .values(evaluated=True)
            )

    def set_outcome(self, opened_id: str, outcome: Outcome) -> None:
        with self._db.write() as c:
            c.execute(
                update(safety_detection_opened)
                .where(safety_detection_opened.c.opened_id == opened_id)
                .values(outcome=outcome.value)
            )

    def store_match(self, match: DetectionMatch, evidence: EvidenceRecord) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_evidence, record_values(evidence))
                insert_row(c, safety_detection_matches, _match_values(match))
                c.execute(
                    update(safety_detection_opened)
                    .where(safety_detection_opened.c.opened_id == match.opened_id)
                    .values(outcome=Outcome.MATCH.value)
                )
        except IntegrityError:
            raise ConflictError("this image is already matched") from None

    def matches_for_case(self, case_id: str) -> list[DetectionMatch]:
        m = safety_detection_matches.c
        return self._matches.where(m.case_id == case_id, m.matched_ms, m.match_id)

    def count_matches(self, start_ms: int, end_ms: int) -> GroupCounts:
        """Images matched (confirmed in the clear against the banks) in ``[start_ms,
        end_ms)``, as the one total under ``()``: COUNT in the database."""
        m = safety_detection_matches.c
        return self._matches.count_by(during(m.matched_ms, start_ms, end_ms))

    def opened_count(self) -> int:
        with self._db.read() as c:
            query = select(func.count()).select_from(safety_detection_opened)
            return int(c.execute(query).scalar_one())

    def delete_idle_windows(self, before_day: int) -> int:
        o = safety_detection_opened.c
        idle = (
            select(o.account, o.device_id, o.window_id)
            .group_by(o.account, o.device_id, o.window_id)
            .having(and_(func.max(o.opened_day) < before_day, func.count(o.outcome) == 0))
        )
        with self._db.write() as c:
            windows = c.execute(idle).all()
            gone = 0
            for w in windows:
                gone += c.execute(
                    delete(safety_detection_opened).where(
                        o.account == w.account,
                        o.device_id == w.device_id,
                        o.window_id == w.window_id,
                        o.outcome.is_(None),
                        o.opened_day < before_day,  # not one that arrived meanwhile
                    )
                ).rowcount
        return gone
