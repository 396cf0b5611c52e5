"""The append-only audit log on ``safety_audit_log`` (`SqlAuditRepository`): ``seq`` is the
primary key, a lost race is `ConflictError`; nothing here updates or deletes a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import and_, func, select, true
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.safety.audit import AuditEntry
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, during, insert_row
from tidings.storage.engine import record_values
from tidings.storage.safety_schema import safety_audit_log

__all__ = ["SqlAuditRepository"]


class SqlAuditRepository:
    """`tidings.safety.audit.AuditRepository` on ``safety_audit_log``. Append-only: this class
    never updates or deletes a row (grant the application role INSERT and SELECT only)."""

    def __init__(self, db: SafetyDatabase, *, page: int = 1000) -> None:
        self._db = db
        self._rows = RecordTable(db, safety_audit_log, "seq", AuditEntry)
        self._page = page

    def append(self, entry: AuditEntry) -> None:
        try:
            with self._db.write() as c:
                head = c.execute(select(func.max(safety_audit_log.c.seq))).scalar()
                if entry.seq != (head or 0) + 1:
                    raise ConflictError("audit log head moved")
                insert_row(c, safety_audit_log, record_values(entry))
        except IntegrityError:
            raise ConflictError("audit log head moved") from None

    def head(self) -> AuditEntry | None:
        found = self._rows.where(true(), safety_audit_log.c.seq.desc(), limit=1)
        return found[0] if found else None

    def entries(self, start_seq: int = 1) -> Iterator[AuditEntry]:
        """Pages of `page` rows in seq order (keyset pagination: memory stays bounded)."""
        after = start_seq - 1
        while True:
            seq = safety_audit_log.c.seq
            rows = self._rows.where(seq > after, seq, limit=self._page)
            yield from rows
            if len(rows) < self._page:
                return
            after = rows[-1].seq

    def count(self) -> int:
        return self._rows.count()

    def count_actions(
        self, start_ms: int, end_ms: int, actions: Iterable[str]
    ) -> dict[tuple[str, ...], int]:
        """Entries of each of ``actions`` with ``start_ms <= time_ms < end_ms``, keyed
        ``(action,)``: one GROUP BY in the database."""
        a = safety_audit_log.c
        return self._rows.count_by(
            and_(a.action.in_(list(actions)), during(a.time_ms, start_ms, end_ms)),
            a.action,
        )
