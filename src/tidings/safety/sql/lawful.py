"""Lawful requests on ``safety_lawful_requests`` (`SqlLawfulRequestRepository`), one row per
request, updated with a version check (a concurrent change is `ConflictError`); their
packages on ``safety_lawful_packages``, one per request."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import case, delete, true

from tidings.safety.lawful_model import LawfulRequest, StoredPackage
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, during, insert_row
from tidings.storage.lawful_schema import safety_lawful_packages, safety_lawful_requests

__all__ = ["SqlLawfulRequestRepository"]


class SqlLawfulRequestRepository:
    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db
        self._rows = RecordTable(db, safety_lawful_requests, "request_id", LawfulRequest)
        self._packages = RecordTable(db, safety_lawful_packages, "request_id", StoredPackage)

    def add(self, request: LawfulRequest) -> None:
        self._rows.insert(request, conflict="lawful request id exists")

    def get(self, request_id: str) -> LawfulRequest | None:
        return self._rows.get(request_id)

    def update(self, request: LawfulRequest) -> None:
        c = safety_lawful_requests.c
        self._rows.update(
            replace(request), c.version == request.version - 1,
            conflict="the lawful request changed; reload and retry",
        )

    def all(self) -> list[LawfulRequest]:
        c = safety_lawful_requests.c
        return self._rows.where(true(), c.received_ms, c.request_id)

    def notices_due(self, now_ms: int) -> list[LawfulRequest]:
        c = safety_lawful_requests.c
        return self._rows.where(
            c.notice_due_ms.is_not(None) & (c.notice_due_ms <= now_ms), c.notice_due_ms,
            c.request_id,
        )

    def for_account(self, account: str) -> list[LawfulRequest]:
        c = safety_lawful_requests.c
        return self._rows.where(c.account == account, c.received_ms, c.request_id)

    def put_package(self, package: StoredPackage) -> None:
        # One transaction: a reader sees the old package or the new one, never none.
        t = safety_lawful_packages
        with self._db.write() as connection:
            connection.execute(delete(t).where(t.c.request_id == package.request_id))
            insert_row(connection, t, self._packages.encode(package))

    def get_package(self, request_id: str) -> StoredPackage | None:
        return self._packages.get(request_id)

    def count_received(self, start_ms: int, end_ms: int) -> dict[tuple[str, ...], int]:
        """Requests received in ``[start_ms, end_ms)``, keyed ``(kind, country, produced,
        non-disclosure order)`` ("yes"/"no"): one GROUP BY (the transparency report)."""
        c = safety_lawful_requests.c
        produced = case((c.produced_ms.is_(None), "no"), else_="yes")
        ndo = case((c.ndo_reference.is_(None), "no"), else_="yes")
        return self._rows.count_by(
            during(c.received_ms, start_ms, end_ms), c.kind, c.country, produced, ndo
        )
