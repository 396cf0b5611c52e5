"""The key-transparency tables (SQLAlchemy Core) on the shared `metadata`, migration ``0018``
(`tidings.storage.kt_store`, `tidings.server.kt_directory`; docs/key-transparency.md
"Publication").

What is stored, all of it public (served to anyone at ``/v1/kt/*``): each account's signed
device lists (account name, version, the VRF label, the encoded list and its hash, when it was
submitted and the epoch that published it; NULL while queued for the next epoch), and each
epoch's signed head, audit proof (epoch - 1 -> epoch) and witness co-signatures. The log is
append-only: nothing here is ever updated except a queued list's epoch and an epoch's
co-signatures, and nothing is deleted.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, String, Table

from tidings.storage.schema import metadata, ms_column

__all__ = ["kt_device_lists", "kt_epochs"]

kt_device_lists = Table(
    "kt_device_lists",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("label", LargeBinary(32), nullable=False),
    Column("list_bytes", LargeBinary, nullable=False),
    Column("list_hash", LargeBinary(32), nullable=False),
    ms_column("submitted_at_ms"),
    Column("epoch", BigInteger, nullable=True),  # NULL: queued for the next epoch
    Index("ix_kt_device_lists_epoch", "epoch"),
)

kt_epochs = Table(
    "kt_epochs",
    metadata,
    Column("epoch", BigInteger, primary_key=True, autoincrement=False),
    Column("head", LargeBinary, nullable=False),
    Column("audit", LargeBinary, nullable=False),
    Column("cosignatures", LargeBinary, nullable=False),
    ms_column("published_at_ms"),
)
