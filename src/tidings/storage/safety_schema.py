"""The trust & safety schema (SQLAlchemy Core), on the same `metadata` as the messaging schema
so one Alembic history covers both (migration ``0003``).

Tables map one-to-one onto the frozen records of `tidings.safety` (reports, report items,
replay keys, evidence, audit log, staff, queue membership, sessions, login throttling, cases,
notes, decisions, appeals) plus ``account_enforcements``, the one table both sides use: the
safety side writes it (`tidings.safety.sql.SqlEnforcementRepository`), the messaging server
reads it (`tidings.storage.enforcement`). Neither side imports the other.

What is stored here (the data inventory of the safety side): verified report metadata (who
reported whom, when, which messages by id and commitment), the reported content and revealed
attachments *encrypted* under the evidence key ring (keys live outside the database), the
audit log, staff accounts (Argon2id hashes; TOTP secrets *encrypted* under the ``staff.key``
file key, migration ``0004``), pending privilege grants and enrolment links (SHA-256 of the
token only), the console's cross-node state (migration ``0006``: per-session exposure counts,
media preferences, pending sign-ins with the password sealed under the browser's handle),
cases, notes, decisions, appeals and enforcement records.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

from tidings.storage.schema import metadata

__all__ = [
    "OPEN_CASE_STATES_SQL",
    "account_enforcements",
    "safety_appeals",
    "safety_audit_log",
    "safety_cases",
    "safety_console_pending",
    "safety_decisions",
    "safety_evidence",
    "safety_login_throttle",
    "safety_notes",
    "safety_report_items",
    "safety_report_replay",
    "safety_reports",
    "safety_staff",
    "safety_staff_enrolment",
    "safety_staff_grants",
    "safety_staff_preferences",
    "safety_staff_queues",
    "safety_staff_sessions",
]

OPEN_CASE_STATES_SQL = "state IN ('open', 'pending_second_review')"
"""Mirrors `tidings.safety.cases.OPEN_STATES` (the partial unique index below)."""

_ID = 64  # every generated id ("rep_" + 32 hex, ...) fits
_NAME = 64  # usernames (accounts and staff)

safety_audit_log = Table(
    "safety_audit_log",
    metadata,
    # Not autoincrement: the log computes seq (head + 1); a lost race is a primary-key
    # violation, which the repository turns into ConflictError.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("entry_hash", LargeBinary(32), nullable=False),
    Column("anchor", LargeBinary(32), nullable=False),
)

safety_staff = Table(
    "safety_staff",
    metadata,
    Column("staff_id", String(_ID), primary_key=True),
    Column("username", String(_NAME), nullable=False, unique=True),
    Column("display_name", String(128), nullable=False),
    Column("roles", String(128), nullable=False),  # comma-separated Role values, sorted
    Column("child_safety", Boolean, nullable=False),
    Column("password_hash", Text, nullable=False),
    # Always "" since 0004 (only databases from before hold a plaintext secret here, until the
    # service's first start seals it into totp_sealed).
    Column("totp_secret", String(64), nullable=False),
    Column("totp_last_step", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Column("totp_sealed", LargeBinary(256), nullable=True),  # nonce || AES-256-GCM(secret)
    Column("enrolled_ms", BigInteger, nullable=True),  # NULL: enrolment not finished
    Column("sponsor", String(_ID), nullable=False, server_default=""),
)

safety_staff_grants = Table(
    "safety_staff_grants",
    metadata,
    Column("grant_id", String(_ID), primary_key=True),
    Column("staff_id", String(_ID), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("role", String(16), nullable=True),
    Column("requested_by", String(_ID), nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("decided_by", String(_ID), nullable=False),
    Column("decided_ms", BigInteger, nullable=False),
)

safety_staff_enrolment = Table(
    "safety_staff_enrolment",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256(token), hex
    Column("staff_id", String(_ID), nullable=False, index=True),
    Column("issued_by", String(_ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)

safety_staff_queues = Table(
    "safety_staff_queues",
    metadata,
    Column("staff_id", String(_ID), nullable=False),
    Column("queue_id", String(_ID), nullable=False),
    PrimaryKeyConstraint("staff_id", "queue_id"),
)

safety_staff_sessions = Table(
    "safety_staff_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # SHA-256(token), hex
    Column("staff_id", String(_ID), nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    # Media items the reviewer revealed in this session (the console's wellbeing counter);
    # it lives and dies with the session row, on whichever node served the request.
    Column("exposure", Integer, nullable=False, server_default="0"),
)

safety_staff_preferences = Table(
    "safety_staff_preferences",
    metadata,
    # A staff member's media overrides; NULL follows the organisation default.
    Column("staff_id", String(_ID), primary_key=True),
    Column("blur", Boolean, nullable=True),
    Column("greyscale", Boolean, nullable=True),
)

safety_console_pending = Table(
    "safety_console_pending",
    metadata,
    # The console's first sign-in step (password given, TOTP code not yet): keyed by SHA-256
    # of the random handle in the browser's cookie; the password is sealed under a key
    # derived from that handle, so the row alone does not reveal it. Single use, expiring.
    Column("handle_hash", String(64), primary_key=True),
    Column("username", String(_NAME), nullable=False),
    Column("password_sealed", LargeBinary(1024), nullable=False),
    Column("expires_ms", BigInteger, nullable=False, index=True),
)

safety_login_throttle = Table(
    "safety_login_throttle",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_failure_ms", BigInteger, nullable=False),
    Column("locked_until_ms", BigInteger, nullable=False),
)

safety_reports = Table(
    "safety_reports",
    metadata,
    Column("report_id", String(_ID), primary_key=True),
    Column("reporter", String(_NAME), nullable=False, index=True),
    Column("reporter_device", Integer, nullable=False),
    Column("subject", String(_NAME), nullable=False),
    Column("subject_device", Integer, nullable=False),
    Column("category", String(32), nullable=False),
    Column("conversation_kind", String(16), nullable=False),
    Column("conversation_id", LargeBinary(32), nullable=False),
    Column("reported_message_id", LargeBinary(16), nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("attachment_count", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("case_id", String(_ID), nullable=True, index=True),
    Column("voided_ms", BigInteger, nullable=True),
)

safety_report_items = Table(
    "safety_report_items",
    metadata,
    Column("report_id", String(_ID), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("message_id", LargeBinary(16), nullable=False),
    Column("commitment", LargeBinary(32), nullable=False),
    Column("sender", String(_NAME), nullable=False),
    Column("sender_device", Integer, nullable=False),
    Column("recipient", String(_NAME), nullable=False),
    Column("recipient_device", Integer, nullable=False),
    Column("server_timestamp_ms", BigInteger, nullable=False),
    Column("franking_key_id", String(_ID), nullable=False),
    Column("franking_verified", Boolean, nullable=False),
    Column("chain_verified", Boolean, nullable=False),
    Column("attachments_verified", Integer, nullable=False),
    PrimaryKeyConstraint("report_id", "idx"),
)

safety_report_replay = Table(
    "safety_report_replay",
    metadata,
    # The seen-set: the primary key makes two concurrent copies of one report fail atomically.
    Column("key", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("report_id", String(_ID), nullable=False),
)

safety_evidence = Table(
    "safety_evidence",
    metadata,
    Column("evidence_id", String(_ID), primary_key=True),
    Column("report_id", String(_ID), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("key_id", String(_ID), nullable=False, index=True),
    Column("nonce", LargeBinary(12), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("plaintext_size", BigInteger, nullable=False),
    Column("child_safety", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("hold_until_ms", BigInteger, nullable=False),
    Index("ix_safety_evidence_retention", "expires_ms", "hold_until_ms"),
)

safety_cases = Table(
    "safety_cases",
    metadata,
    Column("case_id", String(_ID), primary_key=True),
    Column("subject", String(_NAME), nullable=False),
    Column("queue_id", String(_ID), nullable=False),
    Column("category", String(32), nullable=False),
    Column("severity", Integer, nullable=False),
    Column("base_priority", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("sla_due_ms", BigInteger, nullable=False),
    Column("report_count", Integer, nullable=False),
    Column("reporter_count", Integer, nullable=False),
    Column("assignee", String(_ID), nullable=True),
    Column("lock_holder", String(_ID), nullable=True),
    Column("lock_expires_ms", BigInteger, nullable=False),
    Column("escalated_by", String(_ID), nullable=True),
    Column("pending_decision_id", String(_ID), nullable=True),
    Column("final_decision_id", String(_ID), nullable=True),
    Column("version", Integer, nullable=False),
    # The queue filter, and covering for the queue counts (one GROUP BY reads the index only).
    Index(
        "ix_safety_cases_queue_counts",
        "queue_id",
        "state",
        "sla_due_ms",
        "lock_expires_ms",
        "lock_holder",
    ),
    Index("ix_safety_cases_subject", "subject"),
    # One open case per subject, enforced by the database (concurrent intake of two reports
    # about one account cannot open two cases).
    Index(
        "uq_safety_cases_open_subject",
        "subject",
        unique=True,
        sqlite_where=text(OPEN_CASE_STATES_SQL),
        postgresql_where=text(OPEN_CASE_STATES_SQL),
    ),
)

# The queue list pages: ORDER BY priority DESC, sla_due_ms, created_ms, case_id LIMIT n (and
# the keyset step to a neighbour) walk this index in order; ``state`` at the end lets the
# state filter be checked from the index alone.
Index(
    "ix_safety_cases_queue_order",
    safety_cases.c.queue_id,
    safety_cases.c.priority.desc(),
    safety_cases.c.sla_due_ms,
    safety_cases.c.created_ms,
    safety_cases.c.case_id,
    safety_cases.c.state,
)

safety_notes = Table(
    "safety_notes",
    metadata,
    Column("note_id", String(_ID), primary_key=True),
    Column("case_id", String(_ID), nullable=False, index=True),
    Column("author", String(_ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
)

safety_decisions = Table(
    "safety_decisions",
    metadata,
    Column("decision_id", String(_ID), primary_key=True),
    Column("case_id", String(_ID), nullable=False, index=True),
    Column("subject", String(_NAME), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("policy_id", String(_ID), nullable=False),
    Column("reason", Text, nullable=False),
    Column("decided_by", String(_ID), nullable=False),
    Column("decided_ms", BigInteger, nullable=False),
    Column("until_ms", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("second_reviewer", String(_ID), nullable=True),
    Column("second_review_ms", BigInteger, nullable=True),
    Column("second_review_reason", Text, nullable=False),
)

safety_appeals = Table(
    "safety_appeals",
    metadata,
    Column("appeal_id", String(_ID), primary_key=True),
    # One appeal per decision, enforced by the database as well as by the service.
    Column("decision_id", String(_ID), nullable=False, unique=True),
    Column("case_id", String(_ID), nullable=False, index=True),
    Column("account", String(_NAME), nullable=False, index=True),
    Column("filed_ms", BigInteger, nullable=False),
    Column("statement", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("decided_by", String(_ID), nullable=True),
    Column("decided_ms", BigInteger, nullable=True),
    Column("reason", Text, nullable=False),
)

account_enforcements = Table(
    "account_enforcements",
    metadata,
    Column("enforcement_id", String(_ID), primary_key=True),
    Column("username", String(_NAME), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # warn / restrict / suspend / ban
    Column("until_ms", BigInteger, nullable=True),  # NULL: no end
    Column("decision_id", String(_ID), nullable=False, index=True),
    Column("case_id", String(_ID), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),  # set when an appeal overturned it
)
