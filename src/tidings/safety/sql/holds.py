"""Preservation holds on ``safety_holds`` (`SqlHoldRepository`), and the messaging records a
hold reads and preserves (`SqlSubjectRecords`: ``accounts``, ``devices``, ``attachments``),
through the safety side's synchronous engine on the same database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, true, update

from tidings.safety.holds import PreservationHold
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, during
from tidings.storage.holds_schema import safety_holds
from tidings.storage.schema import (
    accounts,
    attachments,
    devices,
    kem_prekeys,
    messages,
    one_time_prekeys,
)
from tidings.wire.base64url import b64e

__all__ = ["SqlHoldRepository", "SqlSubjectRecords"]

_CHUNK = 500


class SqlHoldRepository:
    def __init__(self, db: SafetyDatabase) -> None:
        self._rows = RecordTable(db, safety_holds, "hold_id", PreservationHold)

    def add(self, hold: PreservationHold) -> None:
        self._rows.insert(hold, conflict="hold id exists")

    def get(self, hold_id: str) -> PreservationHold | None:
        return self._rows.get(hold_id)

    def update(self, hold: PreservationHold) -> None:
        self._rows.update(hold, conflict="no such hold")

    def for_account(self, account: str) -> list[PreservationHold]:
        c = safety_holds.c
        return self._rows.where(c.account == account, c.placed_ms, c.hold_id)

    def all(self) -> list[PreservationHold]:
        c = safety_holds.c
        return self._rows.where(true(), c.placed_ms, c.hold_id)

    def count_placed(self, start_ms: int, end_ms: int) -> dict[tuple[str, ...], int]:
        """Holds placed in ``[start_ms, end_ms)`` by kind: one GROUP BY (transparency)."""
        c = safety_holds.c
        return self._rows.count_by(during(c.placed_ms, start_ms, end_ms), c.kind)


class SqlSubjectRecords:
    """`tidings.safety.holds.SubjectRecords` over the messaging tables."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def snapshot(self, account: str) -> dict[str, Any]:
        with self._db.read() as c:
            row = c.execute(
                select(accounts.c.id, accounts.c.username, accounts.c.created_at_ms).where(
                    accounts.c.username == account
                )
            ).first()
            if row is None:
                return {"account": None, "devices": [], "attachments": []}
            d = devices.c
            device_rows = c.execute(
                select(d.device_id, d.name, d.registration_id, d.identity_key,
                       d.created_at_ms, d.last_seen_ms)
                .where(d.account_id == row.id)
                .order_by(d.device_id)
            ).all()
            a = attachments.c
            attachment_rows = c.execute(
                select(a.id, a.size, a.created_at_ms, a.expires_at_ms)
                .where(a.account_id == row.id, a.complete.is_(True))
                .order_by(a.created_at_ms, a.id)
            ).all()
        return {
            "account": {"username": row.username, "created_at_ms": row.created_at_ms},
            # Public keys and metadata only: the credential hash is never copied.
            "devices": [
                {"device_id": r.device_id, "name": r.name, "registration_id": r.registration_id,
                 "identity_key": b64e(bytes(r.identity_key)), "created_at_ms": r.created_at_ms,
                 "last_seen_ms": r.last_seen_ms}
                for r in device_rows
            ],
            "attachments": [
                {"id": r.id, "size": r.size, "created_at_ms": r.created_at_ms,
                 "expires_at_ms": r.expires_at_ms}
                for r in attachment_rows
            ],
        }

    def preserve_attachments(self, ids: Sequence[str], until_ms: int) -> None:
        a = attachments.c
        with self._db.write() as c:
            for start in range(0, len(ids), _CHUNK):
                c.execute(
                    update(attachments)
                    .where(a.id.in_(list(ids[start : start + _CHUNK])), a.expires_at_ms < until_ms)
                    .values(expires_at_ms=until_ms)
                )

    def existing_attachments(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._db.read() as c:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start : start + _CHUNK])
                found.update(
                    c.execute(select(attachments.c.id).where(attachments.c.id.in_(chunk)))
                    .scalars()
                    .all()
                )
        return found

    def production_rows(self, account: str) -> dict[str, list[dict[str, Any]]]:
        """``account``'s public keys, one-time prekeys and queued envelopes' records, by
        table, for a lawful production: the envelope's length, never its bytes."""
        with self._db.read() as c:
            found = c.execute(
                select(accounts.c.id).where(accounts.c.username == account)
            ).scalar()
            if found is None:
                return {"devices": [], "one_time_prekeys": [], "kem_prekeys": [], "messages": []}
            d = devices.c
            keys = c.execute(
                select(d.device_id, d.registration_id, d.identity_key, d.signed_prekey,
                       d.last_resort_kem_prekey)
                .where(d.account_id == found).order_by(d.device_id)
            ).all()
            out: dict[str, list[dict[str, Any]]] = {
                "devices": [
                    {"device_id": r.device_id, "registration_id": r.registration_id,
                     "identity_key": b64e(bytes(r.identity_key)),
                     "signed_prekey": b64e(bytes(r.signed_prekey)),
                     "last_resort_kem_prekey": b64e(bytes(r.last_resort_kem_prekey))}
                    for r in keys
                ],
            }
            for table in (one_time_prekeys, kem_prekeys):
                t = table.c
                out[table.name] = [
                    {"device_id": r.device_id, "key_id": r.key_id, "prekey": b64e(bytes(r.prekey))}
                    for r in c.execute(
                        select(t.device_id, t.key_id, t.prekey)
                        .where(t.account_id == found).order_by(t.device_id, t.key_id)
                    ).all()
                ]
            m = messages.c
            out["messages"] = [
                {"device_id": r.device_id, "created_at_ms": r.created_at_ms,
                 "expires_at_ms": r.expires_at_ms, "size": int(r.size)}
                for r in c.execute(
                    select(m.device_id, m.created_at_ms, m.expires_at_ms,
                           func.length(m.envelope).label("size"))
                    .where(m.account_id == found).order_by(m.id)
                ).all()
            ]
        return out
