"""`tidings.safety.refusals.RefusalCounter` on SQL: one upsert per refusal, one GROUP BY per
report."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tidings.safety.memory_rows import GroupCounts
from tidings.safety.refusals import MAX_REASON_CHARS, day_of
from tidings.safety.sql.engine import SafetyDatabase
from tidings.storage.refusals_schema import safety_report_refusals

__all__ = ["SqlRefusalCounter"]

_MAX_DAY = 2**31 - 1


class SqlRefusalCounter:
    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def increment(self, now_ms: int, reason: str) -> None:
        t = safety_report_refusals
        with self._db.write() as c:
            make: Any = pg_insert if c.dialect.name == "postgresql" else sqlite_insert
            statement = make(t).values(day=day_of(now_ms), reason=reason[:MAX_REASON_CHARS],
                                       count=1)
            # Atomic under concurrency: two refusals on one day and reason add up to two.
            c.execute(statement.on_conflict_do_update(
                index_elements=[t.c.day, t.c.reason], set_={"count": t.c.count + 1}
            ))

    def count_refused(self, start_ms: int, end_ms: int) -> GroupCounts:
        t = safety_report_refusals.c
        # Days as the column's 32-bit integers, whatever the bounds asked.
        first = max(0, min(day_of(start_ms), _MAX_DAY))
        last = max(-1, min(day_of(end_ms - 1), _MAX_DAY))
        query = (
            select(t.reason, func.sum(t.count))
            .where(and_(t.day >= first, t.day <= last))
            .group_by(t.reason)
        )
        with self._db.read() as c:
            return {(str(reason),): int(n) for reason, n in c.execute(query).all()}
