"""Staff accounts, grants, sessions, enrolment and login throttling (`SqlStaffRepository`);
TOTP secrets are sealed at rest with AES-256-GCM under the staff key.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from tidings.crypto.primitives import (
    AES_GCM_NONCE_LEN,
    aes256_gcm_decrypt,
    aes256_gcm_encrypt,
    hkdf_sha256,
    random_bytes,
)
from tidings.errors import ConflictError, InvalidKeyError
from tidings.safety.sql.engine import SafetyDatabase, insert_row
from tidings.safety.staff import (
    EnrolmentToken,
    GrantKind,
    GrantStatus,
    Role,
    StaffAccount,
    StaffGrant,
    StaffSession,
    ThrottleRecord,
)
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
    return StaffGrant(
        grant_id=row.grant_id,
        staff_id=row.staff_id,
        kind=GrantKind(row.kind),
        role=Role(row.role) if row.role else None,
        requested_by=row.requested_by,
        requested_ms=row.requested_ms,
        status=GrantStatus(row.status),
        decided_by=row.decided_by,
        decided_ms=row.decided_ms,
    )


def _grant_values(g: StaffGrant) -> dict[str, Any]:
    return {
        "grant_id": g.grant_id,
        "staff_id": g.staff_id,
        "kind": g.kind.value,
        "role": g.role.value if g.role is not None else None,
        "requested_by": g.requested_by,
        "requested_ms": g.requested_ms,
        "status": g.status.value,
        "decided_by": g.decided_by,
        "decided_ms": g.decided_ms,
    }


def _session(row: Row[Any]) -> StaffSession:
    return StaffSession(
        session_id=row.session_id,
        staff_id=row.staff_id,
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
        last_seen_ms=row.last_seen_ms,
    )


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
        return {
            "staff_id": a.staff_id,
            "username": a.username,
            "display_name": a.display_name,
            "roles": ",".join(sorted(r.value for r in a.roles)),
            "child_safety": a.child_safety,
            "password_hash": a.password_hash,
            "totp_secret": "",
            "totp_sealed": seal_totp(self._key, a.staff_id, a.totp_secret),
            "totp_last_step": a.totp_last_step,
            "disabled": a.disabled,
            "created_ms": a.created_ms,
            "version": a.version,
            "enrolled_ms": a.enrolled_ms,
            "sponsor": a.sponsor,
        }

    def _staff(self, row: Row[Any]) -> StaffAccount:
        return StaffAccount(
            staff_id=row.staff_id,
            username=row.username,
            display_name=row.display_name,
            roles=frozenset(Role(r) for r in row.roles.split(",") if r),
            child_safety=bool(row.child_safety),
            password_hash=row.password_hash,
            totp_secret=open_totp(self._key, row.staff_id, row.totp_sealed),
            totp_last_step=row.totp_last_step,
            disabled=bool(row.disabled),
            created_ms=row.created_ms,
            version=row.version,
            enrolled_ms=row.enrolled_ms,
            sponsor=row.sponsor,
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
        try:
            with self._db.write() as c:
                insert_row(c, safety_staff, self._values(account))
        except IntegrityError:
            raise ConflictError("staff account already exists") from None

    def get_staff(self, staff_id: str) -> StaffAccount | None:
        with self._db.read() as c:
            row = c.execute(select(safety_staff).where(safety_staff.c.staff_id == staff_id)).first()
        return self._staff(row) if row is not None else None

    def get_staff_by_username(self, username: str) -> StaffAccount | None:
        with self._db.read() as c:
            row = c.execute(select(safety_staff).where(safety_staff.c.username == username)).first()
        return self._staff(row) if row is not None else None

    def count_staff(self) -> int:
        with self._db.read() as c:
            return int(c.execute(select(func.count()).select_from(safety_staff)).scalar_one())

    def list_staff(self) -> list[StaffAccount]:
        """Every staff account, by username (the console's staff page)."""
        with self._db.read() as c:
            rows = c.execute(select(safety_staff).order_by(safety_staff.c.username)).all()
        return [self._staff(r) for r in rows]

    def update_staff(self, account: StaffAccount, expected_version: int) -> None:
        values = self._values(account)
        del values["staff_id"]
        with self._db.write() as c:
            result = c.execute(
                update(safety_staff)
                .where(
                    safety_staff.c.staff_id == account.staff_id,
                    safety_staff.c.version == expected_version,
                )
                .values(**values)
            )
            if result.rowcount != 1:
                raise ConflictError("staff account changed concurrently")

    def queues_of(self, staff_id: str) -> frozenset[str]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_staff_queues.c.queue_id).where(
                    safety_staff_queues.c.staff_id == staff_id
                )
            ).all()
        return frozenset(r.queue_id for r in rows)

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
        with self._db.write() as c:
            insert_row(
                c,
                safety_staff_sessions,
                {
                    "session_id": session.session_id,
                    "staff_id": session.staff_id,
                    "created_ms": session.created_ms,
                    "expires_ms": session.expires_ms,
                    "last_seen_ms": session.last_seen_ms,
                },
            )

    def get_session(self, session_id: str) -> StaffSession | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_staff_sessions).where(
                    safety_staff_sessions.c.session_id == session_id
                )
            ).first()
        return _session(row) if row is not None else None

    def update_session(self, session: StaffSession) -> None:
        with self._db.write() as c:
            c.execute(
                update(safety_staff_sessions)
                .where(safety_staff_sessions.c.session_id == session.session_id)
                .values(expires_ms=session.expires_ms, last_seen_ms=session.last_seen_ms)
            )

    def delete_session(self, session_id: str) -> None:
        with self._db.write() as c:
            c.execute(
                delete(safety_staff_sessions).where(
                    safety_staff_sessions.c.session_id == session_id
                )
            )

    def delete_sessions_for(self, staff_id: str) -> None:
        with self._db.write() as c:
            c.execute(
                delete(safety_staff_sessions).where(safety_staff_sessions.c.staff_id == staff_id)
            )

    def get_throttle(self, key: str) -> ThrottleRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_login_throttle).where(safety_login_throttle.c.key == key)
            ).first()
        if row is None:
            return None
        return ThrottleRecord(row.key, row.failures, row.first_failure_ms, row.locked_until_ms)

    def put_throttle(self, record: ThrottleRecord) -> None:
        values = {
            "failures": record.failures,
            "first_failure_ms": record.first_failure_ms,
            "locked_until_ms": record.locked_until_ms,
        }
        with self._db.write() as c:
            result = c.execute(
                update(safety_login_throttle)
                .where(safety_login_throttle.c.key == record.key)
                .values(**values)
            )
            if result.rowcount == 0:
                insert_row(c, safety_login_throttle, {"key": record.key, **values})

    def clear_throttle(self, key: str) -> None:
        with self._db.write() as c:
            c.execute(delete(safety_login_throttle).where(safety_login_throttle.c.key == key))

    def add_grant(self, grant: StaffGrant) -> None:
        try:
            with self._db.write() as c:
                insert_row(c, safety_staff_grants, _grant_values(grant))
        except IntegrityError:
            raise ConflictError("grant already exists") from None

    def get_grant(self, grant_id: str) -> StaffGrant | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_staff_grants).where(safety_staff_grants.c.grant_id == grant_id)
            ).first()
        return _grant(row) if row is not None else None

    def decide_grant(self, grant: StaffGrant) -> None:
        values = _grant_values(grant)
        del values["grant_id"]
        with self._db.write() as c:
            result = c.execute(
                update(safety_staff_grants)
                .where(
                    safety_staff_grants.c.grant_id == grant.grant_id,
                    safety_staff_grants.c.status == GrantStatus.PENDING.value,
                )
                .values(**values)
            )
            if result.rowcount != 1:
                raise ConflictError("this grant was already decided")

    def pending_grants(self) -> list[StaffGrant]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_staff_grants)
                .where(safety_staff_grants.c.status == GrantStatus.PENDING.value)
                .order_by(safety_staff_grants.c.requested_ms, safety_staff_grants.c.grant_id)
            ).all()
        return [_grant(r) for r in rows]

    def replace_enrolment(self, token: EnrolmentToken) -> None:
        with self._db.write() as c:
            c.execute(
                delete(safety_staff_enrolment).where(
                    safety_staff_enrolment.c.staff_id == token.staff_id
                )
            )
            insert_row(
                c,
                safety_staff_enrolment,
                {
                    "token_hash": token.token_hash,
                    "staff_id": token.staff_id,
                    "issued_by": token.issued_by,
                    "created_ms": token.created_ms,
                    "expires_ms": token.expires_ms,
                },
            )

    def get_enrolment(self, token_hash: str) -> EnrolmentToken | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_staff_enrolment).where(
                    safety_staff_enrolment.c.token_hash == token_hash
                )
            ).first()
        if row is None:
            return None
        return EnrolmentToken(
            row.token_hash, row.staff_id, row.issued_by, row.created_ms, row.expires_ms
        )

    def delete_enrolments_for(self, staff_id: str) -> None:
        with self._db.write() as c:
            c.execute(
                delete(safety_staff_enrolment).where(safety_staff_enrolment.c.staff_id == staff_id)
            )
