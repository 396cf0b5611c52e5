"""Staff accounts, grants, sessions, enrolment and login throttling (`SqlStaffRepository`);
TOTP secrets are sealed at rest with AES-256-GCM under the staff key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, select, true, update

from tidings.crypto.primitives import (
    AES_GCM_NONCE_LEN,
    aes256_gcm_decrypt,
    aes256_gcm_encrypt,
    hkdf_sha256,
    random_bytes,
)
from tidings.errors import InvalidKeyError
from tidings.safety.sql.engine import RecordTable, SafetyDatabase, insert_row, update_row
from tidings.safety.staff import (
    EnrolmentToken,
    GrantStatus,
    Role,
    StaffAccount,
    StaffGrant,
    StaffSession,
    ThrottleRecord,
)
from tidings.storage.engine import record_from_row, record_values
from tidings.storage.safety_schema import (
    safety_login_throttle,
    safety_staff,
    safety_staff_enrolment,
    safety_staff_grants,
    safety_staff_queues,
    safety_staff_sessions,
)
from tidings.wire.binary import var16

__all__ = ["STAFF_KEY_LEN", "SqlStaffRepository", "open_totp", "seal_totp"]


STAFF_KEY_LEN = 32
TOTP_AAD_LABEL = b"Tidings_StaffTotp_v1"


def _totp_aad(staff_id: str) -> bytes:
    return TOTP_AAD_LABEL + var16(staff_id.encode("utf-8"))


def seal_totp(key: bytes, staff_id: str, secret: str) -> bytes | None:
    """``nonce || AES-256-GCM(key, nonce, secret, aad)``, the aad binding the staff id (a
    sealed secret copied onto another account does not open). None for no secret."""
    if not secret:
        return None
    nonce = random_bytes(AES_GCM_NONCE_LEN)
    return nonce + aes256_gcm_encrypt(key, nonce, secret.encode("ascii"), _totp_aad(staff_id))


def open_totp(key: bytes, staff_id: str, sealed: bytes | None) -> str:
    """Inverse of `seal_totp` ("" for None). Raises `DecryptionError` (wrong key or row)."""
    if not sealed:
        return ""
    nonce, body = sealed[:AES_GCM_NONCE_LEN], sealed[AES_GCM_NONCE_LEN:]
    return aes256_gcm_decrypt(key, nonce, body, _totp_aad(staff_id)).decode("ascii")


def _grant(row: Row[Any]) -> StaffGrant:
    # NULL, or "" in rows older than the column's nullability: no role (a clearance grant).
    return record_from_row(StaffGrant, row, role=Role(row.role) if row.role else None)


class SqlStaffRepository:
    """`tidings.safety.staff.StaffRepository` on the ``safety_staff*`` and
    ``safety_login_throttle`` tables.

    TOTP secrets are stored sealed (`seal_totp`) under ``totp_key``, the 32-byte key of the
    ``staff.key`` file (`tidings.safety.keyfile.load_staff_key`), never in the clear: a copy
    of the database alone mints no second factor.

    Raises (on construction): `InvalidKeyError` if ``totp_key`` is not 32 bytes.
    """

    def __init__(self, db: SafetyDatabase, totp_key: bytes) -> None:
        if not isinstance(totp_key, bytes) or len(totp_key) != STAFF_KEY_LEN:
            raise InvalidKeyError(f"the staff key must be {STAFF_KEY_LEN} bytes")
        self._db = db
        self._key = totp_key
        self._staff_rows = RecordTable(
            db, safety_staff, "staff_id", StaffAccount, decode=self._staff, encode=self._values
        )
        self._grants = RecordTable(db, safety_staff_grants, "grant_id", StaffGrant, decode=_grant)
        self._sessions = RecordTable(db, safety_staff_sessions, "session_id", StaffSession)
        self._enrolments = RecordTable(db, safety_staff_enrolment, "token_hash", EnrolmentToken)
        self._throttles = RecordTable(db, safety_login_throttle, "key", ThrottleRecord)

    @property
    def database(self) -> SafetyDatabase:
        """The engine under this repository (the console keeps its cross-node state there)."""
        return self._db

    def derived_key(self, label: bytes) -> bytes:
        """A 32-byte key for another purpose, HKDF-SHA256 of the staff key with ``label`` as
        the info: every node with the same ``staff.key`` derives the same key, the staff key
        itself never leaves this object, and a derived key does not reveal it."""
        return hkdf_sha256(self._key, salt=b"", info=label, length=STAFF_KEY_LEN)

    def _values(self, a: StaffAccount) -> dict[str, Any]:
        return record_values(
            a,
            roles=",".join(sorted(r.value for r in a.roles)),
            totp_secret="",  # never in the clear: sealed below
            totp_sealed=seal_totp(self._key, a.staff_id, a.totp_secret),
        )

    def _staff(self, row: Row[Any]) -> StaffAccount:
        return record_from_row(
            StaffAccount,
            row,
            roles=frozenset(Role(r) for r in row.roles.split(",") if r),
            totp_secret=open_totp(self._key, row.staff_id, row.totp_sealed),
        )

    def seal_legacy(self) -> int:
        """Seal the plaintext TOTP secrets of accounts from before migration 0004 (run at
        service start, after migrating: Alembic does not hold the key); returns how many.
        On SQLite the write-ahead log is checkpointed so no plaintext page copy stays in it
        (``secure_delete`` zeroes the freed bytes in the database file)."""
        with self._db.write() as c:
            rows = c.execute(
                select(safety_staff.c.staff_id, safety_staff.c.totp_secret).where(
                    safety_staff.c.totp_secret != ""
                )
            ).all()
            for row in rows:
                c.execute(
                    update(safety_staff)
                    .where(safety_staff.c.staff_id == row.staff_id)
                    .values(
                        totp_secret="",
                        totp_sealed=seal_totp(self._key, row.staff_id, row.totp_secret),
                    )
                )
        if rows and self._db.is_sqlite:
            with self._db.read() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(rows)

    def add_staff(self, account: StaffAccount) -> None:
        self._staff_rows.insert(account, conflict="staff account already exists")

    def get_staff(self, staff_id: str) -> StaffAccount | None:
        return self._staff_rows.get(staff_id)

    def get_staff_by_username(self, username: str) -> StaffAccount | None:
        found = self._staff_rows.where(safety_staff.c.username == username)
        return found[0] if found else None

    def count_staff(self) -> int:
        return self._staff_rows.count()

    def list_staff(self) -> list[StaffAccount]:
        """Every staff account, by username (the console's staff page)."""
        return self._staff_rows.where(true(), safety_staff.c.username)

    def update_staff(self, account: StaffAccount, expected_version: int) -> None:
        self._staff_rows.update(
            account,
            safety_staff.c.version == expected_version,
            conflict="staff account changed concurrently",
        )

    def queues_of(self, staff_id: str) -> frozenset[str]:
        q = safety_staff_queues.c
        query = select(q.queue_id).where(q.staff_id == staff_id)
        return frozenset(self._db.all(query, lambda row: str(row.queue_id)))

    def add_queue_member(self, staff_id: str, queue_id: str) -> None:
        with self._db.write() as c:
            exists = c.execute(
                select(safety_staff_queues.c.staff_id).where(
                    safety_staff_queues.c.staff_id == staff_id,
                    safety_staff_queues.c.queue_id == queue_id,
                )
            ).first()
            if exists is None:
                insert_row(c, safety_staff_queues, {"staff_id": staff_id, "queue_id": queue_id})

    def remove_queue_member(self, staff_id: str, queue_id: str) -> None:
        with self._db.write() as c:
            c.execute(
                delete(safety_staff_queues).where(
                    safety_staff_queues.c.staff_id == staff_id,
                    safety_staff_queues.c.queue_id == queue_id,
                )
            )

    def add_session(self, session: StaffSession) -> None:
        self._sessions.insert(session)

    def get_session(self, session_id: str) -> StaffSession | None:
        return self._sessions.get(session_id)

    def update_session(self, session: StaffSession) -> None:
        # Only the times move (staff_id and created_ms are those of the stored row).
        with self._db.write() as c:
            c.execute(
                update(safety_staff_sessions)
                .where(safety_staff_sessions.c.session_id == session.session_id)
                .values(expires_ms=session.expires_ms, last_seen_ms=session.last_seen_ms)
            )

    def delete_session(self, session_id: str) -> None:
        self._sessions.delete(safety_staff_sessions.c.session_id == session_id)

    def delete_sessions_for(self, staff_id: str) -> None:
        self._sessions.delete(safety_staff_sessions.c.staff_id == staff_id)

    def get_throttle(self, key: str) -> ThrottleRecord | None:
        return self._throttles.get(key)

    def put_throttle(self, record: ThrottleRecord) -> None:
        values = record_values(record)
        with self._db.write() as c:
            if update_row(c, safety_login_throttle, "key", values) == 0:
                insert_row(c, safety_login_throttle, values)

    def clear_throttle(self, key: str) -> None:
        self._throttles.delete(safety_login_throttle.c.key == key)

    def add_grant(self, grant: StaffGrant) -> None:
        self._grants.insert(grant, conflict="grant already exists")

    def get_grant(self, grant_id: str) -> StaffGrant | None:
        return self._grants.get(grant_id)

    def decide_grant(self, grant: StaffGrant) -> None:
        self._grants.update(
            grant,
            safety_staff_grants.c.status == GrantStatus.PENDING.value,
            conflict="this grant was already decided",
        )

    def pending_grants(self) -> list[StaffGrant]:
        g = safety_staff_grants.c
        return self._grants.where(g.status == GrantStatus.PENDING.value, g.requested_ms, g.grant_id)

    def replace_enrolment(self, token: EnrolmentToken) -> None:
        with self._db.write() as c:
            c.execute(
                delete(safety_staff_enrolment).where(
                    safety_staff_enrolment.c.staff_id == token.staff_id
                )
            )
            insert_row(c, safety_staff_enrolment, record_values(token))

    def get_enrolment(self, token_hash: str) -> EnrolmentToken | None:
        return self._enrolments.get(token_hash)

    def delete_enrolments_for(self, staff_id: str) -> None:
        self._enrolments.delete(safety_staff_enrolment.c.staff_id == staff_id)
