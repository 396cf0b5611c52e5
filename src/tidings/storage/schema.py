"""The messaging schema (SQLAlchemy Core). Migrations in `migrations/versions` create it; this
module is what the queries are written against, and a test checks the two agree.

What is stored, and only this (the data inventory of the messaging side): account names,
devices (name, registration id, public identity key, a SHA-256 of the device secret, times),
public prekeys, queued envelopes (ciphertext plus routing, commitment and franking tag) until
acknowledged or expired, provisioning-code hashes, and attachment ciphertext metadata. No
plaintext, no private key, no device secret.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants a 64-bit identity.
Id64 = BigInteger().with_variant(Integer(), "sqlite")


def ms_column(name: str, *, nullable: bool = False) -> Column[int]:
    """A point in time, milliseconds since the Unix epoch (both schemas store every time so)."""
    return Column(name, BigInteger, nullable=nullable)


accounts = Table(
    "accounts",
    metadata,
    Column("id", Id64, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    ms_column("created_at_ms"),
    Column("next_device_id", Integer, nullable=False, default=1),
)

devices = Table(
    "devices",
    metadata,
    Column("account_id", Id64, nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("name", String(64), nullable=False),
    Column("registration_id", BigInteger, nullable=False),
    Column("identity_key", LargeBinary(65), nullable=False),
    Column("credential_hash", LargeBinary(32), nullable=False),
    Column("signed_prekey", LargeBinary, nullable=False),
    Column("last_resort_kem_prekey", LargeBinary, nullable=False),
    ms_column("created_at_ms"),
    ms_column("last_seen_ms"),
    # A linked device's key-transparency link binding (HMAC under the link code's local
    # secret, which the server never sees): the existing device checks it before vouching.
    Column("link_binding", LargeBinary(32), nullable=True),
    PrimaryKeyConstraint("account_id", "device_id"),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)


def _prekey_table(name: str) -> Table:
    """A device's stock of one kind of one-time prekey (classical or KEM): the two kinds are
    stored, claimed and deleted alike."""
    return Table(
        name,
        metadata,
        Column("id", Id64, primary_key=True, autoincrement=True),
        Column("account_id", Id64, nullable=False),
        Column("device_id", Integer, nullable=False),
        Column("key_id", BigInteger, nullable=False),
        Column("prekey", LargeBinary, nullable=False),
        UniqueConstraint("account_id", "device_id", "key_id"),
        ForeignKeyConstraint(
            ["account_id", "device_id"],
            ["devices.account_id", "devices.device_id"],
            ondelete="CASCADE",
        ),
    )


one_time_prekeys = _prekey_table("one_time_prekeys")
kem_prekeys = _prekey_table("kem_prekeys")

messages = Table(
    "messages",
    metadata,
    Column("id", Id64, primary_key=True, autoincrement=True),
    Column("account_id", Id64, nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("message_id", LargeBinary(16), nullable=False, unique=True),
    Column("envelope", LargeBinary, nullable=False),
    ms_column("created_at_ms"),
    ms_column("expires_at_ms"),
    ForeignKeyConstraint(
        ["account_id", "device_id"],
        ["devices.account_id", "devices.device_id"],
        ondelete="CASCADE",
    ),
    Index("ix_messages_queue", "account_id", "device_id", "id"),
    Index("ix_messages_expiry", "expires_at_ms"),
    # Queue positions must never be reused: a WebSocket resumes "after the last position it
    # sent", and SQLite without AUTOINCREMENT hands a deleted top rowid out again.
    sqlite_autoincrement=True,
)

provisioning_codes = Table(
    "provisioning_codes",
    metadata,
    Column("code_hash", LargeBinary(32), primary_key=True),
    Column("account_id", Id64, nullable=False),
    ms_column("expires_at_ms"),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", String(43), primary_key=True),
    Column("account_id", Id64, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("complete", Boolean, nullable=False, default=False),
    ms_column("created_at_ms"),
    ms_column("expires_at_ms"),
    ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
    Index("ix_attachments_expiry", "expires_at_ms"),
    Index("ix_attachments_account", "account_id"),  # the per-account quota sums by account
)

# The key-transparency log's tables live in a module of their own (`kt_schema`, on this
# `metadata`); importing it here puts every table of the messaging side on `metadata` whoever
# imports the schema first.
from tidings.storage import kt_schema as _kt_schema  # noqa: E402, F401
