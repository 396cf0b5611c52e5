"""The console's stores (`tidings.console.state`) in the shared database, so every node of a
cluster sees the same sign-in progress, exposure counts and preferences (migration 0006).

- Pending sign-ins (``safety_console_pending``): keyed by SHA-256 of the handle; the password
  is sealed with AES-256-GCM under a key derived from the handle itself, which only the
  browser's cookie holds, so the database alone never yields it. `take` deletes the row in
  the same transaction that reads it and hands it out only if *this* delete removed it, so
  two nodes racing on one handle give it to one of them. Expired rows are swept on `put`.
- Exposure counts: a column of the staff session row (``safety_staff_sessions.exposure``),
  incremented in SQL, gone with the session (logout, expiry, disabling the account).
- Preferences (``safety_staff_preferences``): one row per staff member, upserted.
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
from tidings.errors import DecryptionError
from tidings.safety.sql.engine import SafetyDatabase, insert_row
from tidings.safety.staff_model import token_digest
from tidings.storage.safety_schema import (
    safety_console_pending,
    safety_staff_preferences,
    safety_staff_sessions,
)
from tidings.wire.binary import var16

from .security import PENDING_TTL_MS
from .state import MAX_PENDING, ConsoleState, PendingLogin, Preferences, new_handle

__all__ = ["SqlExposure", "SqlPendingLogins", "SqlPreferences", "sql_state"]

PENDING_KEY_LABEL = b"Tidings_ConsolePendingLogin_v1"


def _handle_key(handle: str) -> bytes:
    return hkdf_sha256(handle.encode("utf-8"), salt=b"", info=PENDING_KEY_LABEL, length=32)


def _aad(key_id: str, username: str) -> bytes:
    # Binds the sealed password to its row and username: a row edited in the database (or a
    # sealed blob moved to another row) does not open.
    return PENDING_KEY_LABEL + var16(key_id.encode("ascii")) + var16(username.encode("utf-8"))


class SqlPendingLogins:
    """`tidings.console.state.PendingLoginStore` on ``safety_console_pending``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def put(self, username: str, password: str, now_ms: int) -> str:
        handle, key_id = new_handle()
        nonce = random_bytes(AES_GCM_NONCE_LEN)
        sealed = nonce + aes256_gcm_encrypt(
            _handle_key(handle), nonce, password.encode("utf-8"), _aad(key_id, username)
        )
        t = safety_console_pending.c
        with self._db.write() as c:
            c.execute(delete(safety_console_pending).where(t.expires_ms <= now_ms))
            if c.execute(select(func.count()).select_from(safety_console_pending)).scalar_one() >= (
                MAX_PENDING
            ):
                first = select(t.handle_hash).order_by(t.expires_ms).limit(1).scalar_subquery()
                c.execute(delete(safety_console_pending).where(t.handle_hash == first))
            insert_row(
                c,
                safety_console_pending,
                {
                    "handle_hash": key_id,
                    "username": username,
                    "password_sealed": sealed,
                    "expires_ms": now_ms + PENDING_TTL_MS,
                },
            )
        return handle

    def peek(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        if not handle:
            return None
        key_id = token_digest(handle)
        with self._db.read() as c:
            row = c.execute(
                select(safety_console_pending).where(
                    safety_console_pending.c.handle_hash == key_id
                )
            ).first()
        return _open(handle, row, now_ms)

    def take(self, handle: str | None, now_ms: int) -> PendingLogin | None:
        if not handle:
            return None
        key_id = token_digest(handle)
        t = safety_console_pending.c
        with self._db.write() as c:
            row = c.execute(select(safety_console_pending).where(t.handle_hash == key_id)).first()
            if row is None:
                return None
            gone = c.execute(delete(safety_console_pending).where(t.handle_hash == key_id))
            if gone.rowcount != 1:  # another node took it between our read and delete
                return None
        return _open(handle, row, now_ms)


def _open(handle: str, row: Row[Any] | None, now_ms: int) -> PendingLogin | None:
    """The pending sign-in of a row read for ``handle``; None if missing, expired or not
    opening (a tampered row is treated as no pending sign-in)."""
    if row is None or row.expires_ms <= now_ms:
        return None
    sealed: bytes = row.password_sealed
    nonce, body = sealed[:AES_GCM_NONCE_LEN], sealed[AES_GCM_NONCE_LEN:]
    aad = _aad(token_digest(handle), row.username)
    try:
        password = aes256_gcm_decrypt(_handle_key(handle), nonce, body, aad)
    except DecryptionError:
        return None
    return PendingLogin(row.username, password.decode("utf-8"), row.expires_ms)


class SqlExposure:
    """`tidings.console.state.ExposureStore` on the ``exposure`` column of the session row."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def get(self, session_id: str) -> int:
        t = safety_staff_sessions.c
        with self._db.read() as c:
            value = c.execute(select(t.exposure).where(t.session_id == session_id)).scalar()
        return int(value or 0)

    def add(self, session_id: str, n: int = 1) -> int:
        return self._set(session_id, safety_staff_sessions.c.exposure + max(0, n))

    def forget(self, session_id: str) -> None:
        self._set(session_id, 0)

    def _set(self, session_id: str, value: Any) -> int:
        """Set the session's count to ``value`` (a number or a SQL expression of the column)
        and return the count now stored (0 for no such session)."""
        t = safety_staff_sessions.c
        this = t.session_id == session_id
        with self._db.write() as c:
            c.execute(update(safety_staff_sessions).where(this).values(exposure=value))
            return int(c.execute(select(t.exposure).where(this)).scalar() or 0)


class SqlPreferences:
    """`tidings.console.state.PreferenceRows` on ``safety_staff_preferences``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def get(self, staff_id: str) -> Preferences:
        t = safety_staff_preferences.c
        with self._db.read() as c:
            row = c.execute(select(t.blur, t.greyscale).where(t.staff_id == staff_id)).first()
        return Preferences() if row is None else Preferences(row.blur, row.greyscale)

    def put(self, staff_id: str, prefs: Preferences) -> None:
        t = safety_staff_preferences.c
        values = {"blur": prefs.blur, "greyscale": prefs.greyscale}
        change = update(safety_staff_preferences).where(t.staff_id == staff_id).values(**values)
        for _ in range(2):  # a concurrent first save wins the insert: then update over it
            try:
                with self._db.write() as c:
                    if c.execute(change).rowcount == 0:
                        insert_row(c, safety_staff_preferences, {"staff_id": staff_id, **values})
                return
            except IntegrityError:
                continue


def sql_state(db: SafetyDatabase) -> ConsoleState:
    """The console's stores on ``db`` (the safety database every node shares)."""
    return ConsoleState(SqlPendingLogins(db), SqlExposure(db), SqlPreferences(db))
