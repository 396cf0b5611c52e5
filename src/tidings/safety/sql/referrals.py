"""`SqlReferralRepository`: `tidings.safety.referral_records.ReferralRepository` on
``safety_referrals`` (`tidings.storage.referral_schema`). Every change is a versioned update
(a lost race is `ConflictError`); ``(case_id, seq)`` is unique, so two concurrent
preparations of one case cannot both be stored."""

from __future__ import annotations

from sqlalchemy import true

from tidings.safety.referral_records import ReferralRecord
from tidings.safety.sql.engine import RecordTable, SafetyDatabase
from tidings.storage.referral_schema import safety_referrals

__all__ = ["SqlReferralRepository"]

_RACE = "a referral of this case was prepared concurrently"


class SqlReferralRepository:
    """See the module docstring."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._rows = RecordTable(db, safety_referrals, "referral_id", ReferralRecord)

    def add_referral(self, record: ReferralRecord) -> None:
        self._rows.insert(record, conflict=_RACE)

    def get_referral(self, referral_id: str) -> ReferralRecord | None:
        return self._rows.get(referral_id)

    def update_referral(self, record: ReferralRecord, expected_version: int) -> None:
        self._rows.update(
            record,
            safety_referrals.c.version == expected_version,
            conflict="the referral changed concurrently",
        )

    def referrals_for_case(self, case_id: str) -> list[ReferralRecord]:
        c = safety_referrals.c
        return self._rows.where(c.case_id == case_id, c.seq)

    def list_referrals(self, *, limit: int, offset: int = 0) -> list[ReferralRecord]:
        c = safety_referrals.c
        query = (
            self._rows.table.select()
            .where(true())
            .order_by(c.prepared_ms.desc(), c.referral_id)
            .limit(limit)
            .offset(offset)
        )
        return self._rows.db.all(query, self._rows.decode)
