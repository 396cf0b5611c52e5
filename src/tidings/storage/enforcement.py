"""What the messaging server reads of trust & safety decisions: the active enforcement of an
account, from ``account_enforcements`` (written by the safety side through
`tidings.safety.sql.SqlEnforcementRepository`). Async, on the server's `Database`.

Only ban, suspend and restrict change what the messaging API allows; a warning does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select

from tidings.storage.database import Database
from tidings.storage.safety_schema import account_enforcements

__all__ = ["BAN", "RESTRICT", "SUSPEND", "ActiveEnforcement", "active_enforcement", "is_banned"]

BAN = "ban"
SUSPEND = "suspend"
RESTRICT = "restrict"
_SEVERITY = {BAN: 3, SUSPEND: 2, RESTRICT: 1}


@dataclass(frozen=True, slots=True)
class ActiveEnforcement:
    """The most severe active enforcement of an account (``kind``: ban, suspend, restrict)."""

    kind: str
    until_ms: int | None
    decision_id: str


async def active_enforcement(db: Database, username: str, now_ms: int) -> ActiveEnforcement | None:
    """The most severe unrevoked, unexpired ban / suspension / restriction of ``username``, or
    None. One indexed query."""
    e = account_enforcements.c
    async with db.read() as connection:
        rows = (
            await connection.execute(
                select(e.kind, e.until_ms, e.decision_id).where(
                    e.username == username,
                    e.kind.in_(list(_SEVERITY)),
                    e.revoked_ms.is_(None),
                    or_(e.until_ms.is_(None), e.until_ms > now_ms),
                )
            )
        ).all()
    if not rows:
        return None
    worst = max(rows, key=lambda r: (_SEVERITY[r.kind], r.until_ms is None, r.until_ms or 0))
    return ActiveEnforcement(worst.kind, worst.until_ms, worst.decision_id)


async def is_banned(db: Database, username: str, now_ms: int) -> bool:
    """Whether ``username`` carries an active ban (a banned name cannot be registered again)."""
    found = await active_enforcement(db, username, now_ms)
    return found is not None and found.kind == BAN
