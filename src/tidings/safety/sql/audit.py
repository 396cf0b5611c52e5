"""The append-only audit log on ``safety_audit_log`` (`SqlAuditRepository`): ``seq`` is the
primary key, a lost race is `ConflictError`; nothing here updates or deletes a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.exc import IntegrityError

from tidings.errors import ConflictError
from tidings.safety.audit import AuditEntry
from tidings.safety.sql.engine import SafetyDatabase, insert_row
from tidings.storage.engine import record_from_row, record_values
from tidings.storage.safety_schema import safety_audit_log

__all__ = ["SqlAuditRepository"]


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return record_from_row(AuditEntry, row)


class SqlAuditRepository:
    """`tidings.safety.audit.AuditRepository` on ``safety_audit_log``. Append-only: this class
    never updates or deletes a row (grant the application role INSERT and SELECT only)."""

    def __init__(self, db: SafetyDatabase, *, page: int = 1000) -> None:
        self._db = db
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
        query = select(safety_audit_log).order_by(safety_audit_log.c.seq.desc()).limit(1)
        return self._db.first(query, _audit_entry)

    def entries(self, start_seq: int = 1) -> Iterator[AuditEntry]:
        """Pages of `page` rows in seq order (keyset pagination: memory stays bounded)."""
        after = start_seq - 1
        while True:
            with self._db.read() as c:
                rows = c.execute(
                    select(safety_audit_log)
                    .where(safety_audit_log.c.seq > after)
                    .order_by(safety_audit_log.c.seq)
                    .limit(self._page)
                ).all()
            for row in rows:
                yield _audit_entry(row)
            if len(rows) < self._page:
                return
            after = rows[-1].seq

    def page(self, *, before_seq: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first: up to ``limit`` entries with ``seq < before_seq`` (the console's audit
        page)."""
        query = select(safety_audit_log).order_by(safety_audit_log.c.seq.desc()).limit(limit)
        if before_seq is not None:
            query = query.where(safety_audit_log.c.seq < before_seq)
        return self._db.all(query, _audit_entry)

    def count(self) -> int:
        with self._db.read() as c:
            return int(c.execute(select(func.count()).select_from(safety_audit_log)).scalar_one())
