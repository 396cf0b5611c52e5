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
cases, notes, decisions, appeals and enforcement records; the hash banks (migration ``0007``:
banks, their entries — hashes of known illegal images, supplied by outside organisations,
never of users' content — each entry's sources, and the list version); which reported
attachments matched which bank entries (migration ``0009``: the entries' banks, ids,
distances and sources, the attachment's SHA-256 and PDQ hash; never its bytes, which are
evidence).
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

from tidings.storage.schema import metadata, ms_column

__all__ = [
    "OPEN_CASE_STATES_SQL",
    "account_enforcements",
    "safety_appeals",
    "safety_audit_log",
    "safety_bank_entries",
    "safety_bank_list",
    "safety_bank_sources",
    "safety_banks",
    "safety_cases",
    "safety_console_pending",
    "safety_decisions",
    "safety_evidence",
    "safety_login_throttle",
    "safety_notes",
    "safety_report_items",
    "safety_report_matches",
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


def _id(
    name: str,
    *,
    primary_key: bool = False,
    nullable: bool = False,
    index: bool = False,
    unique: bool = False,
) -> Column[str]:
    """A column holding a generated id (a record's own, or a reference to one)."""
    return Column(
        name, String(_ID), primary_key=primary_key, nullable=nullable, index=index, unique=unique
    )


def _username(name: str, *, index: bool = False, unique: bool = False) -> Column[str]:
    """A column holding a username (an account's or a staff member's), never NULL."""
    return Column(name, String(_NAME), nullable=False, index=index, unique=unique)


safety_audit_log = Table(
    "safety_audit_log",
    metadata,
    # Not autoincrement: the log computes seq (head + 1); a lost race is a primary-key
    # violation, which the repository turns into ConflictError.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    ms_column("time_ms"),
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
    _id("staff_id", primary_key=True),
    _username("username", unique=True),
    Column("display_name", String(128), nullable=False),
    Column("roles", String(128), nullable=False),  # comma-separated Role values, sorted
    Column("child_safety", Boolean, nullable=False),
    Column("password_hash", Text, nullable=False),
    # Always "" since 0004 (only databases from before hold a plaintext secret here, until the
    # service's first start seals it into totp_sealed).
    Column("totp_secret", String(64), nullable=False),
    Column("totp_last_step", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False),
    ms_column("created_ms"),
    Column("version", Integer, nullable=False),
    Column("totp_sealed", LargeBinary(256), nullable=True),  # nonce || AES-256-GCM(secret)
    ms_column("enrolled_ms", nullable=True),  # NULL: enrolment not finished
    Column("sponsor", String(_ID), nullable=False, server_default=""),
)

safety_staff_grants = Table(
    "safety_staff_grants",
    metadata,
    _id("grant_id", primary_key=True),
    _id("staff_id", index=True),
    Column("kind", String(16), nullable=False),
    Column("role", String(16), nullable=True),
    _id("requested_by"),
    ms_column("requested_ms"),
    Column("status", String(16), nullable=False, index=True),
    _id("decided_by"),
    ms_column("decided_ms"),
)

safety_staff_enrolment = Table(
    "safety_staff_enrolment",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256(token), hex
    _id("staff_id", index=True),
    _id("issued_by"),
    ms_column("created_ms"),
    ms_column("expires_ms"),
)

safety_staff_queues = Table(
    "safety_staff_queues",
    metadata,
    _id("staff_id"),
    _id("queue_id"),
    PrimaryKeyConstraint("staff_id", "queue_id"),
)

safety_staff_sessions = Table(
    "safety_staff_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),  # SHA-256(token), hex
    _id("staff_id", index=True),
    ms_column("created_ms"),
    ms_column("expires_ms"),
    ms_column("last_seen_ms"),
    # Media items the reviewer revealed in this session (the console's wellbeing counter);
    # it lives and dies with the session row, on whichever node served the request.
    Column("exposure", Integer, nullable=False, server_default="0"),
)

safety_staff_preferences = Table(
    "safety_staff_preferences",
    metadata,
    # A staff member's media overrides; NULL follows the organisation default.
    _id("staff_id", primary_key=True),
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
    _username("username"),
    Column("password_sealed", LargeBinary(1024), nullable=False),
    ms_column("expires_ms"),
    Index("ix_safety_console_pending_expires_ms", "expires_ms"),
)

safety_login_throttle = Table(
    "safety_login_throttle",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    ms_column("first_failure_ms"),
    ms_column("locked_until_ms"),
)

safety_reports = Table(
    "safety_reports",
    metadata,
    _id("report_id", primary_key=True),
    _username("reporter", index=True),
    Column("reporter_device", Integer, nullable=False),
    _username("subject"),
    Column("subject_device", Integer, nullable=False),
    Column("category", String(32), nullable=False),
    Column("conversation_kind", String(16), nullable=False),
    Column("conversation_id", LargeBinary(32), nullable=False),
    Column("reported_message_id", LargeBinary(16), nullable=False),
    ms_column("received_ms"),
    Column("item_count", Integer, nullable=False),
    Column("attachment_count", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    _id("case_id", nullable=True, index=True),
    ms_column("voided_ms", nullable=True),
)

safety_report_items = Table(
    "safety_report_items",
    metadata,
    _id("report_id"),
    Column("idx", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("message_id", LargeBinary(16), nullable=False),
    Column("commitment", LargeBinary(32), nullable=False),
    _username("sender"),
    Column("sender_device", Integer, nullable=False),
    _username("recipient"),
    Column("recipient_device", Integer, nullable=False),
    ms_column("server_timestamp_ms"),
    _id("franking_key_id"),
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
    _id("report_id"),
)

safety_report_matches = Table(
    "safety_report_matches",
    metadata,
    # A reported attachment that matched hash-bank entries (migration 0009), stored in the
    # report's own transaction; one row per attachment.
    _id("report_id"),
    Column("item_index", Integer, nullable=False),
    Column("attachment_index", Integer, nullable=False),
    _id("attachment_id"),
    Column("sha256", LargeBinary(32), nullable=False),
    Column("pdq", LargeBinary(32), nullable=True),  # NULL: not an image that hashes
    Column("distance", Integer, nullable=False),  # the best; 0 for an exact (digest) match
    Column("entries", Text, nullable=False),  # JSON list of MatchedEntry.to_json()
    ms_column("matched_ms"),
    PrimaryKeyConstraint("report_id", "item_index", "attachment_index"),
)

safety_evidence = Table(
    "safety_evidence",
    metadata,
    _id("evidence_id", primary_key=True),
    _id("report_id", index=True),
    Column("kind", String(64), nullable=False),
    _id("key_id", index=True),
    Column("nonce", LargeBinary(12), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("plaintext_size", BigInteger, nullable=False),
    Column("child_safety", Boolean, nullable=False),
    ms_column("created_ms"),
    ms_column("expires_ms"),
    ms_column("hold_until_ms"),
    Index("ix_safety_evidence_retention", "expires_ms", "hold_until_ms"),
)

safety_cases = Table(
    "safety_cases",
    metadata,
    _id("case_id", primary_key=True),
    _username("subject"),
    _id("queue_id"),
    Column("category", String(32), nullable=False),
    Column("severity", Integer, nullable=False),
    Column("base_priority", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    ms_column("created_ms"),
    ms_column("updated_ms"),
    ms_column("sla_due_ms"),
    Column("report_count", Integer, nullable=False),
    Column("reporter_count", Integer, nullable=False),
    _id("assignee", nullable=True),
    _id("lock_holder", nullable=True),
    ms_column("lock_expires_ms"),
    _id("escalated_by", nullable=True),
    _id("pending_decision_id", nullable=True),
    _id("final_decision_id", nullable=True),
    Column("version", Integer, nullable=False),
    # "report" (opened by user reports) or "detection" (by a hash-bank match); 0007.
    Column("source", String(16), nullable=False, server_default="report"),
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
    _id("note_id", primary_key=True),
    _id("case_id", index=True),
    _id("author"),
    ms_column("created_ms"),
    Column("text", Text, nullable=False),
)

safety_decisions = Table(
    "safety_decisions",
    metadata,
    _id("decision_id", primary_key=True),
    _id("case_id", index=True),
    _username("subject"),
    Column("kind", String(32), nullable=False),
    _id("policy_id"),
    Column("reason", Text, nullable=False),
    _id("decided_by"),
    ms_column("decided_ms"),
    ms_column("until_ms", nullable=True),
    Column("status", String(16), nullable=False),
    _id("second_reviewer", nullable=True),
    ms_column("second_review_ms", nullable=True),
    Column("second_review_reason", Text, nullable=False),
)

safety_appeals = Table(
    "safety_appeals",
    metadata,
    _id("appeal_id", primary_key=True),
    # One appeal per decision, enforced by the database as well as by the service.
    _id("decision_id", unique=True),
    _id("case_id", index=True),
    _username("account", index=True),
    ms_column("filed_ms"),
    Column("statement", Text, nullable=False),
    Column("status", String(16), nullable=False),
    _id("decided_by", nullable=True),
    ms_column("decided_ms", nullable=True),
    Column("reason", Text, nullable=False),
)

account_enforcements = Table(
    "account_enforcements",
    metadata,
    _id("enforcement_id", primary_key=True),
    _username("username", index=True),
    Column("kind", String(16), nullable=False),  # warn / restrict / suspend / ban
    ms_column("until_ms", nullable=True),  # NULL: no end
    _id("decision_id", index=True),
    _id("case_id"),
    ms_column("created_ms"),
    ms_column("revoked_ms", nullable=True),  # set when an appeal overturned it
)

safety_banks = Table(
    "safety_banks",
    metadata,
    _id("bank_id", primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("category", String(32), nullable=False),
    Column("description", Text, nullable=False),
    ms_column("created_ms"),
    _id("created_by"),
)

safety_bank_entries = Table(
    "safety_bank_entries",
    metadata,
    _id("entry_id", primary_key=True),
    _id("bank_id"),
    Column("signal_type", String(16), nullable=False),
    Column("value", String(64), nullable=False),  # canonical lowercase hex
    Column("quality", Integer, nullable=True),
    ms_column("added_ms"),
    ms_column("removed_ms", nullable=True),  # set when the last source withdrew it
    # Derived from the active sources (the two-jurisdiction rule), kept in step by every
    # write so that a bank page filters and counts eligibility in SQL.
    Column("device_eligible", Boolean, nullable=False),
    # One entry per value and bank (the same value from several sources is one entry); also
    # the bank page's order, (signal_type, value).
    Index("uq_safety_bank_entries_value", "bank_id", "signal_type", "value", unique=True),
    # The lists across banks: active entries of a type (the device-eligible ones), by value.
    Index("ix_safety_bank_entries_lists", "signal_type", "removed_ms", "device_eligible", "value"),
)

safety_bank_sources = Table(
    "safety_bank_sources",
    metadata,
    _id("entry_id"),
    Column("organisation", String(128), nullable=False),
    Column("jurisdiction", String(2), nullable=False),  # ISO 3166-1 alpha-2
    ms_column("added_ms"),
    ms_column("removed_ms", nullable=True),
    PrimaryKeyConstraint("entry_id", "organisation", "added_ms"),
    # An organisation's recorded jurisdiction (one per organisation).
    Index("ix_safety_bank_sources_organisation", "organisation"),
)

safety_bank_list = Table(
    "safety_bank_list",
    metadata,
    # One row (id 1): the version of the lists, +1 in the transaction of every change to the
    # active or the device-eligible entries. No row: version 0.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)
