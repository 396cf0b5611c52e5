"""SQL implementations of the trust & safety repository Protocols (`tidings.safety`).

The domain services are synchronous, so these repositories run on a *synchronous* SQLAlchemy
engine (`SafetyDatabase`) on the same database as the messaging server's async engine:

- SQLite (``sqlite+pysqlite``): WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for
  every write transaction, so a writer takes the write lock up front and concurrent writers
  (this engine's threads, the server's async engine, other processes) *wait* for it instead of
  failing on a read-to-write upgrade. Reads use plain deferred transactions.
- PostgreSQL (``postgresql+psycopg``): ordinary transactions; optional schema via
  ``search_path``.

Protocol notes honoured here: `SqlReportRepository.store_verified_report` is one transaction
(report, items, evidence, replay keys) and the replay keys are a primary key, so two copies of
one report cannot both be stored; the audit log is append-only (``seq`` primary key, a lost
race is `ConflictError`; nothing here updates or deletes it); cases and staff use versioned
updates; a partial unique index keeps one open case per subject.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from tidings.crypto.primitives import (
    AES_GCM_NONCE_LEN,
    aes256_gcm_decrypt,
    aes256_gcm_encrypt,
    random_bytes,
)
from tidings.errors import (
    ConflictError,
    InvalidKeyError,
    MessageAlreadyReportedError,
    ReportReplayError,
)
from tidings.safety.audit import AuditEntry
from tidings.safety.case_model import (
    OPEN_STATES,
    AppealRecord,
    AppealStatus,
    CaseRecord,
    CaseState,
    DecisionKind,
    DecisionRecord,
    DecisionStatus,
    Enforcement,
    EnforcementKind,
    NoteRecord,
)
from tidings.safety.categories import Category, ConversationKind, Severity
from tidings.safety.evidence import EvidenceRecord
from tidings.safety.reports import (
    ItemRole,
    ReplayKey,
    ReplayKind,
    ReportedItemRecord,
    ReportRecord,
    ReportStatus,
)
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
from tidings.storage.database import MIGRATIONS, create_sqlite_file_privately
from tidings.storage.safety_schema import (
    account_enforcements,
    safety_appeals,
    safety_audit_log,
    safety_cases,
    safety_decisions,
    safety_evidence,
    safety_login_throttle,
    safety_notes,
    safety_report_items,
    safety_report_replay,
    safety_reports,
    safety_staff,
    safety_staff_enrolment,
    safety_staff_grants,
    safety_staff_queues,
    safety_staff_sessions,
)
from tidings.wire.binary import var16

__all__ = [
    "STAFF_KEY_LEN",
    "SafetyDatabase",
    "SqlAuditRepository",
    "SqlCaseRepository",
    "SqlEnforcementRepository",
    "SqlEvidenceRepository",
    "SqlReportRepository",
    "SqlStaffRepository",
    "sync_url",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_WRITE = "tidings_write"


def sync_url(url: str) -> str:
    """The synchronous driver URL for a database URL in any of the spellings the server
    accepts (``postgresql://``, ``postgresql+asyncpg://``, ``sqlite:///``,
    ``sqlite+aiosqlite:///``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a database URL")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + rest
    if base == "sqlite":
        return "sqlite+pysqlite://" + rest
    return url


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN would be
    # deferred and placed before the first DML only).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SafetyDatabase:
    """A synchronous engine for the safety repositories.

    Raises (on construction):
        ValueError: a ``schema`` for SQLite, or one that is not a plain identifier.
    """

    def __init__(self, url: str, *, schema: str = "", pool_size: int = 5) -> None:
        self.url = sync_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.schema = schema
        if schema and (self.is_sqlite or not _IDENTIFIER.fullmatch(schema)):
            raise ValueError("database schema must be a plain identifier, PostgreSQL only")
        if self.is_sqlite:
            self.engine: Engine = create_engine(self.url, connect_args={"timeout": 15})
            create_sqlite_file_privately(self.engine, self.url)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                connect_args=connect_args,
            )

    def __repr__(self) -> str:
        # The URL may carry a password: show the dialect only.
        return f"SafetyDatabase(dialect={self.engine.dialect.name!r})"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on
        success, rolls back on any exception."""
        with self.engine.connect() as connection:
            connection.execution_options(**{_WRITE: True})
            with connection.begin():
                yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def migrate(self) -> None:
        """Apply every pending Alembic migration (both schemas; idempotent)."""
        from alembic import command
        from alembic.config import Config

        with self.engine.connect() as connection:
            if not self.is_sqlite:
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(1953064041)")
                if self.schema:
                    connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def _insert(connection: Connection, table: Table, values: dict[str, Any]) -> None:
    connection.execute(insert(table).values(**values))


# --- audit ----------------------------------------------------------------------------------


def _audit_entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        time_ms=row.time_ms,
        actor=row.actor,
        action=row.action,
        target=row.target,
        details=row.details,
        prev_hash=bytes(row.prev_hash),
        entry_hash=bytes(row.entry_hash),
        anchor=bytes(row.anchor),
    )


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
                _insert(
                    c,
                    safety_audit_log,
                    {
                        "seq": entry.seq,
                        "time_ms": entry.time_ms,
                        "actor": entry.actor,
                        "action": entry.action,
                        "target": entry.target,
                        "details": entry.details,
                        "prev_hash": entry.prev_hash,
                        "entry_hash": entry.entry_hash,
                        "anchor": entry.anchor,
                    },
                )
        except IntegrityError:
            raise ConflictError("audit log head moved") from None

    def head(self) -> AuditEntry | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_audit_log).order_by(safety_audit_log.c.seq.desc()).limit(1)
            ).first()
        return _audit_entry(row) if row is not None else None

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
        with self._db.read() as c:
            return [_audit_entry(r) for r in c.execute(query).all()]

    def count(self) -> int:
        with self._db.read() as c:
            return int(c.execute(select(func.count()).select_from(safety_audit_log)).scalar_one())


# --- staff ----------------------------------------------------------------------------------


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
                _insert(c, safety_staff, self._values(account))
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
                _insert(c, safety_staff_queues, {"staff_id": staff_id, "queue_id": queue_id})

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
            _insert(
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
                _insert(c, safety_login_throttle, {"key": record.key, **values})

    def clear_throttle(self, key: str) -> None:
        with self._db.write() as c:
            c.execute(delete(safety_login_throttle).where(safety_login_throttle.c.key == key))

    def add_grant(self, grant: StaffGrant) -> None:
        try:
            with self._db.write() as c:
                _insert(c, safety_staff_grants, _grant_values(grant))
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
            _insert(
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


# --- reports and evidence -------------------------------------------------------------------


def _report_values(r: ReportRecord) -> dict[str, Any]:
    return {
        "report_id": r.report_id,
        "reporter": r.reporter,
        "reporter_device": r.reporter_device,
        "subject": r.subject,
        "subject_device": r.subject_device,
        "category": r.category.value,
        "conversation_kind": r.conversation_kind.value,
        "conversation_id": r.conversation_id,
        "reported_message_id": r.reported_message_id,
        "received_ms": r.received_ms,
        "item_count": r.item_count,
        "attachment_count": r.attachment_count,
        "status": r.status.value,
        "case_id": r.case_id,
        "voided_ms": r.voided_ms,
    }


def _report(row: Row[Any]) -> ReportRecord:
    return ReportRecord(
        report_id=row.report_id,
        reporter=row.reporter,
        reporter_device=row.reporter_device,
        subject=row.subject,
        subject_device=row.subject_device,
        category=Category(row.category),
        conversation_kind=ConversationKind(row.conversation_kind),
        conversation_id=bytes(row.conversation_id),
        reported_message_id=bytes(row.reported_message_id),
        received_ms=row.received_ms,
        item_count=row.item_count,
        attachment_count=row.attachment_count,
        status=ReportStatus(row.status),
        case_id=row.case_id,
        voided_ms=row.voided_ms,
    )


def _item(row: Row[Any]) -> ReportedItemRecord:
    return ReportedItemRecord(
        report_id=row.report_id,
        index=row.idx,
        role=ItemRole(row.role),
        message_id=bytes(row.message_id),
        commitment=bytes(row.commitment),
        sender=row.sender,
        sender_device=row.sender_device,
        recipient=row.recipient,
        recipient_device=row.recipient_device,
        server_timestamp_ms=row.server_timestamp_ms,
        franking_key_id=row.franking_key_id,
        franking_verified=bool(row.franking_verified),
        chain_verified=bool(row.chain_verified),
        attachments_verified=row.attachments_verified,
    )


def _evidence_values(e: EvidenceRecord) -> dict[str, Any]:
    return {
        "evidence_id": e.evidence_id,
        "report_id": e.report_id,
        "kind": e.kind,
        "key_id": e.key_id,
        "nonce": e.nonce,
        "ciphertext": e.ciphertext,
        "plaintext_size": e.plaintext_size,
        "child_safety": e.child_safety,
        "created_ms": e.created_ms,
        "expires_ms": e.expires_ms,
        "hold_until_ms": e.hold_until_ms,
    }


def _evidence(row: Row[Any]) -> EvidenceRecord:
    return EvidenceRecord(
        evidence_id=row.evidence_id,
        report_id=row.report_id,
        kind=row.kind,
        key_id=row.key_id,
        nonce=bytes(row.nonce),
        ciphertext=bytes(row.ciphertext),
        plaintext_size=row.plaintext_size,
        child_safety=bool(row.child_safety),
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
        hold_until_ms=row.hold_until_ms,
    )


def _raise_replay(kinds: set[ReplayKind]) -> None:
    if ReplayKind.REPORT in kinds:
        raise ReportReplayError()
    if ReplayKind.MESSAGE in kinds:
        raise MessageAlreadyReportedError()


class SqlReportRepository:
    """`tidings.safety.reports.ReportRepository` on ``safety_reports``, ``safety_report_items``
    and ``safety_report_replay`` (evidence rows go to ``safety_evidence`` in the same
    transaction)."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def seen_replay_keys(self, keys: Sequence[str]) -> list[ReplayKey]:
        if not keys:
            return []
        with self._db.read() as c:
            rows = c.execute(
                select(safety_report_replay).where(safety_report_replay.c.key.in_(list(keys)))
            ).all()
        return [ReplayKey(r.key, ReplayKind(r.kind)) for r in rows]

    def store_verified_report(
        self,
        report: ReportRecord,
        items: Sequence[ReportedItemRecord],
        evidence: Sequence[EvidenceRecord],
        replay: Sequence[ReplayKey],
    ) -> None:
        try:
            with self._db.write() as c:
                seen = c.execute(
                    select(safety_report_replay.c.kind).where(
                        safety_report_replay.c.key.in_([k.key for k in replay])
                    )
                ).all()
                _raise_replay({ReplayKind(r.kind) for r in seen})
                _insert(c, safety_reports, _report_values(report))
                if items:
                    c.execute(
                        insert(safety_report_items),
                        [
                            {
                                "report_id": i.report_id,
                                "idx": i.index,
                                "role": i.role.value,
                                "message_id": i.message_id,
                                "commitment": i.commitment,
                                "sender": i.sender,
                                "sender_device": i.sender_device,
                                "recipient": i.recipient,
                                "recipient_device": i.recipient_device,
                                "server_timestamp_ms": i.server_timestamp_ms,
                                "franking_key_id": i.franking_key_id,
                                "franking_verified": i.franking_verified,
                                "chain_verified": i.chain_verified,
                                "attachments_verified": i.attachments_verified,
                            }
                            for i in items
                        ],
                    )
                if evidence:
                    c.execute(insert(safety_evidence), [_evidence_values(e) for e in evidence])
                c.execute(
                    insert(safety_report_replay),
                    [
                        {"key": k.key, "kind": k.kind.value, "report_id": report.report_id}
                        for k in replay
                    ],
                )
        except IntegrityError:
            # A concurrent copy won the race (or the ids collided): nothing of ours is stored.
            seen_keys = self.seen_replay_keys([k.key for k in replay])
            _raise_replay({k.kind for k in seen_keys})
            raise ConflictError("report id exists") from None

    def get_report(self, report_id: str) -> ReportRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_reports).where(safety_reports.c.report_id == report_id)
            ).first()
        return _report(row) if row is not None else None

    def update_report(self, report: ReportRecord) -> None:
        values = _report_values(report)
        del values["report_id"]
        with self._db.write() as c:
            c.execute(
                update(safety_reports)
                .where(safety_reports.c.report_id == report.report_id)
                .values(**values)
            )

    def _reports(self, condition: Any) -> list[ReportRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_reports)
                .where(condition)
                .order_by(safety_reports.c.received_ms, safety_reports.c.report_id)
            ).all()
        return [_report(r) for r in rows]

    def reports_for_case(self, case_id: str) -> list[ReportRecord]:
        return self._reports(safety_reports.c.case_id == case_id)

    def reports_by_reporter(self, reporter: str) -> list[ReportRecord]:
        return self._reports(safety_reports.c.reporter == reporter)

    def items_for_report(self, report_id: str) -> list[ReportedItemRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_report_items)
                .where(safety_report_items.c.report_id == report_id)
                .order_by(safety_report_items.c.idx)
            ).all()
        return [_item(r) for r in rows]

    def count_reports(self) -> int:
        with self._db.read() as c:
            return int(c.execute(select(func.count()).select_from(safety_reports)).scalar_one())


class SqlEvidenceRepository:
    """`tidings.safety.evidence.EvidenceRepository` on ``safety_evidence``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def _select(self, condition: Any, limit: int | None = None) -> list[EvidenceRecord]:
        query = select(safety_evidence).where(condition).order_by(safety_evidence.c.evidence_id)
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as c:
            return [_evidence(r) for r in c.execute(query).all()]

    def get_evidence(self, evidence_id: str) -> EvidenceRecord | None:
        found = self._select(safety_evidence.c.evidence_id == evidence_id)
        return found[0] if found else None

    def evidence_for_report(self, report_id: str) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.report_id == report_id)

    def evidence_not_under_key(self, key_id: str, limit: int) -> list[EvidenceRecord]:
        return self._select(safety_evidence.c.key_id != key_id, limit)

    def replace_evidence(self, record: EvidenceRecord, expected_key_id: str) -> None:
        values = _evidence_values(record)
        del values["evidence_id"]
        with self._db.write() as c:
            result = c.execute(
                update(safety_evidence)
                .where(
                    safety_evidence.c.evidence_id == record.evidence_id,
                    safety_evidence.c.key_id == expected_key_id,
                )
                .values(**values)
            )
            if result.rowcount != 1:
                raise ConflictError("evidence changed concurrently")

    def set_hold(self, evidence_id: str, hold_until_ms: int) -> None:
        with self._db.write() as c:
            c.execute(
                update(safety_evidence)
                .where(safety_evidence.c.evidence_id == evidence_id)
                .values(hold_until_ms=hold_until_ms)
            )

    def expired_evidence(self, now_ms: int, limit: int) -> list[EvidenceRecord]:
        e = safety_evidence.c
        return self._select(
            and_(e.expires_ms <= now_ms, e.hold_until_ms <= now_ms),
            limit,
        )

    def delete_evidence(self, evidence_id: str) -> None:
        with self._db.write() as c:
            c.execute(delete(safety_evidence).where(safety_evidence.c.evidence_id == evidence_id))


# --- cases ----------------------------------------------------------------------------------


def _case_values(case: CaseRecord) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "subject": case.subject,
        "queue_id": case.queue_id,
        "category": case.category.value,
        "severity": int(case.severity),
        "base_priority": case.base_priority,
        "priority": case.priority,
        "state": case.state.value,
        "created_ms": case.created_ms,
        "updated_ms": case.updated_ms,
        "sla_due_ms": case.sla_due_ms,
        "report_count": case.report_count,
        "reporter_count": case.reporter_count,
        "assignee": case.assignee,
        "lock_holder": case.lock_holder,
        "lock_expires_ms": case.lock_expires_ms,
        "escalated_by": case.escalated_by,
        "pending_decision_id": case.pending_decision_id,
        "final_decision_id": case.final_decision_id,
        "version": case.version,
    }


def _case(row: Row[Any]) -> CaseRecord:
    return CaseRecord(
        case_id=row.case_id,
        subject=row.subject,
        queue_id=row.queue_id,
        category=Category(row.category),
        severity=Severity(row.severity),
        base_priority=row.base_priority,
        priority=row.priority,
        state=CaseState(row.state),
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        sla_due_ms=row.sla_due_ms,
        report_count=row.report_count,
        reporter_count=row.reporter_count,
        assignee=row.assignee,
        lock_holder=row.lock_holder,
        lock_expires_ms=row.lock_expires_ms,
        escalated_by=row.escalated_by,
        pending_decision_id=row.pending_decision_id,
        final_decision_id=row.final_decision_id,
        version=row.version,
    )


def _decision_values(d: DecisionRecord) -> dict[str, Any]:
    return {
        "decision_id": d.decision_id,
        "case_id": d.case_id,
        "subject": d.subject,
        "kind": d.kind.value,
        "policy_id": d.policy_id,
        "reason": d.reason,
        "decided_by": d.decided_by,
        "decided_ms": d.decided_ms,
        "until_ms": d.until_ms,
        "status": d.status.value,
        "second_reviewer": d.second_reviewer,
        "second_review_ms": d.second_review_ms,
        "second_review_reason": d.second_review_reason,
    }


def _decision(row: Row[Any]) -> DecisionRecord:
    return DecisionRecord(
        decision_id=row.decision_id,
        case_id=row.case_id,
        subject=row.subject,
        kind=DecisionKind(row.kind),
        policy_id=row.policy_id,
        reason=row.reason,
        decided_by=row.decided_by,
        decided_ms=row.decided_ms,
        until_ms=row.until_ms,
        status=DecisionStatus(row.status),
        second_reviewer=row.second_reviewer,
        second_review_ms=row.second_review_ms,
        second_review_reason=row.second_review_reason,
    )


def _appeal_values(a: AppealRecord) -> dict[str, Any]:
    return {
        "appeal_id": a.appeal_id,
        "decision_id": a.decision_id,
        "case_id": a.case_id,
        "account": a.account,
        "filed_ms": a.filed_ms,
        "statement": a.statement,
        "status": a.status.value,
        "decided_by": a.decided_by,
        "decided_ms": a.decided_ms,
        "reason": a.reason,
    }


def _appeal(row: Row[Any]) -> AppealRecord:
    return AppealRecord(
        appeal_id=row.appeal_id,
        decision_id=row.decision_id,
        case_id=row.case_id,
        account=row.account,
        filed_ms=row.filed_ms,
        statement=row.statement,
        status=AppealStatus(row.status),
        decided_by=row.decided_by,
        decided_ms=row.decided_ms,
        reason=row.reason,
    )


_OPEN = [s.value for s in OPEN_STATES]


class SqlCaseRepository:
    """`tidings.safety.cases.CaseRepository` on ``safety_cases``, ``safety_notes``,
    ``safety_decisions`` and ``safety_appeals``."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def add_case(self, case: CaseRecord) -> None:
        try:
            with self._db.write() as c:
                _insert(c, safety_cases, _case_values(case))
        except IntegrityError:
            # The id exists, or (partial unique index) an open case for the subject does.
            raise ConflictError("an open case for this subject exists") from None

    def get_case(self, case_id: str) -> CaseRecord | None:
        with self._db.read() as c:
            row = c.execute(select(safety_cases).where(safety_cases.c.case_id == case_id)).first()
        return _case(row) if row is not None else None

    def update_case(self, case: CaseRecord, expected_version: int) -> None:
        values = _case_values(case)
        del values["case_id"]
        try:
            with self._db.write() as c:
                result = c.execute(
                    update(safety_cases)
                    .where(
                        safety_cases.c.case_id == case.case_id,
                        safety_cases.c.version == expected_version,
                    )
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise ConflictError("case changed concurrently")
        except IntegrityError:
            raise ConflictError("an open case for this subject exists") from None

    def open_case_for_subject(self, subject: str) -> CaseRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_cases).where(
                    safety_cases.c.subject == subject, safety_cases.c.state.in_(_OPEN)
                )
            ).first()
        return _case(row) if row is not None else None

    def cases_in_queue(self, queue_id: str, states: frozenset[CaseState]) -> list[CaseRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_cases).where(
                    safety_cases.c.queue_id == queue_id,
                    safety_cases.c.state.in_([s.value for s in states]),
                )
            ).all()
        return [_case(r) for r in rows]

    def cases_for_subject(self, subject: str) -> list[CaseRecord]:
        """Every case about an account, oldest first."""
        with self._db.read() as c:
            rows = c.execute(
                select(safety_cases)
                .where(safety_cases.c.subject == subject)
                .order_by(safety_cases.c.created_ms)
            ).all()
        return [_case(r) for r in rows]

    def add_note(self, note: NoteRecord) -> None:
        with self._db.write() as c:
            _insert(
                c,
                safety_notes,
                {
                    "note_id": note.note_id,
                    "case_id": note.case_id,
                    "author": note.author,
                    "created_ms": note.created_ms,
                    "text": note.text,
                },
            )

    def notes_for_case(self, case_id: str) -> list[NoteRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_notes)
                .where(safety_notes.c.case_id == case_id)
                .order_by(safety_notes.c.created_ms, safety_notes.c.note_id)
            ).all()
        return [NoteRecord(r.note_id, r.case_id, r.author, r.created_ms, r.text) for r in rows]

    def add_decision(self, decision: DecisionRecord) -> None:
        try:
            with self._db.write() as c:
                _insert(c, safety_decisions, _decision_values(decision))
        except IntegrityError:
            raise ConflictError("decision id exists") from None

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_decisions).where(safety_decisions.c.decision_id == decision_id)
            ).first()
        return _decision(row) if row is not None else None

    def update_decision(self, decision: DecisionRecord) -> None:
        values = _decision_values(decision)
        del values["decision_id"]
        with self._db.write() as c:
            c.execute(
                update(safety_decisions)
                .where(safety_decisions.c.decision_id == decision.decision_id)
                .values(**values)
            )

    def decisions_for_case(self, case_id: str) -> list[DecisionRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_decisions)
                .where(safety_decisions.c.case_id == case_id)
                .order_by(safety_decisions.c.decided_ms, safety_decisions.c.decision_id)
            ).all()
        return [_decision(r) for r in rows]

    def add_appeal(self, appeal: AppealRecord) -> None:
        try:
            with self._db.write() as c:
                _insert(c, safety_appeals, _appeal_values(appeal))
        except IntegrityError:
            raise ConflictError("this decision was already appealed") from None

    def get_appeal(self, appeal_id: str) -> AppealRecord | None:
        with self._db.read() as c:
            row = c.execute(
                select(safety_appeals).where(safety_appeals.c.appeal_id == appeal_id)
            ).first()
        return _appeal(row) if row is not None else None

    def update_appeal(self, appeal: AppealRecord) -> None:
        values = _appeal_values(appeal)
        del values["appeal_id"]
        with self._db.write() as c:
            c.execute(
                update(safety_appeals)
                .where(safety_appeals.c.appeal_id == appeal.appeal_id)
                .values(**values)
            )

    def appeals_for_decision(self, decision_id: str) -> list[AppealRecord]:
        with self._db.read() as c:
            rows = c.execute(
                select(safety_appeals).where(safety_appeals.c.decision_id == decision_id)
            ).all()
        return [_appeal(r) for r in rows]

    def appeals_by_account(self, account: str) -> list[AppealRecord]:
        """Every appeal an account filed, oldest first."""
        with self._db.read() as c:
            rows = c.execute(
                select(safety_appeals)
                .where(safety_appeals.c.account == account)
                .order_by(safety_appeals.c.filed_ms)
            ).all()
        return [_appeal(r) for r in rows]

    def open_appeals(self) -> list[AppealRecord]:
        """Appeals awaiting a decision, oldest first."""
        with self._db.read() as c:
            rows = c.execute(
                select(safety_appeals)
                .where(safety_appeals.c.status == AppealStatus.OPEN.value)
                .order_by(safety_appeals.c.filed_ms)
            ).all()
        return [_appeal(r) for r in rows]


# --- enforcement ----------------------------------------------------------------------------


def _enforcement(row: Row[Any]) -> Enforcement:
    return Enforcement(
        enforcement_id=row.enforcement_id,
        account=row.username,
        kind=EnforcementKind(row.kind),
        until_ms=row.until_ms,
        decision_id=row.decision_id,
        case_id=row.case_id,
        created_ms=row.created_ms,
        revoked_ms=row.revoked_ms,
    )


class SqlEnforcementRepository:
    """`tidings.safety.cases.EnforcementRepository` on ``account_enforcements`` — the table the
    messaging server reads (`tidings.storage.enforcement`): a row written here takes effect on
    the messaging API with the next request."""

    def __init__(self, db: SafetyDatabase) -> None:
        self._db = db

    def add_enforcement(self, enforcement: Enforcement) -> None:
        with self._db.write() as c:
            _insert(
                c,
                account_enforcements,
                {
                    "enforcement_id": enforcement.enforcement_id,
                    "username": enforcement.account,
                    "kind": enforcement.kind.value,
                    "until_ms": enforcement.until_ms,
                    "decision_id": enforcement.decision_id,
                    "case_id": enforcement.case_id,
                    "created_ms": enforcement.created_ms,
                    "revoked_ms": enforcement.revoked_ms,
                },
            )

    def _select(self, condition: Any) -> list[Enforcement]:
        with self._db.read() as c:
            rows = c.execute(
                select(account_enforcements)
                .where(condition)
                .order_by(account_enforcements.c.created_ms, account_enforcements.c.enforcement_id)
            ).all()
        return [_enforcement(r) for r in rows]

    def enforcements_for_decision(self, decision_id: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.decision_id == decision_id)

    def enforcements_for_account(self, account: str) -> list[Enforcement]:
        return self._select(account_enforcements.c.username == account)

    def active_for_account(self, account: str, now_ms: int) -> list[Enforcement]:
        e = account_enforcements.c
        return self._select(
            and_(
                e.username == account,
                e.revoked_ms.is_(None),
                or_(e.until_ms.is_(None), e.until_ms > now_ms),
            )
        )

    def revoke_enforcement(self, enforcement_id: str, revoked_ms: int) -> None:
        with self._db.write() as c:
            c.execute(
                update(account_enforcements)
                .where(
                    account_enforcements.c.enforcement_id == enforcement_id,
                    account_enforcements.c.revoked_ms.is_(None),
                )
                .values(revoked_ms=revoked_ms)
            )

