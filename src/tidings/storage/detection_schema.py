"""The detection tables (SQLAlchemy Core) on the shared `metadata`, migrations ``0008`` and ``0013``
(`tidings.safety.detection`; records in `tidings.safety.detection_model`).

What is stored (the data inventory of detection): the published lists (version, digest,
signature, counts; the list bytes are in the attachment store), vouchers accepted and not yet
processed (raw bytes, deleted once processed), opened vouchers (a threshold share and an inner
ciphertext the server cannot decrypt below the threshold, per account, device and window, with
the UTC day it opened, for the retention of idle windows), and confirmed matches (which case,
which sealed evidence record, bank entries, distances). Nothing here records a voucher that did
not open, nor when any voucher arrived.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from tidings.storage.schema import metadata, ms_column

__all__ = [
    "safety_detection_lists",
    "safety_detection_matches",
    "safety_detection_opened",
    "safety_detection_pending",
]

_ID = 64
_NAME = 64

safety_detection_lists = Table(
    "safety_detection_lists",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("signing_public", LargeBinary(32), nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("bank_list_version", BigInteger, nullable=False),
    ms_column("created_ms"),
    Column("entry_count", BigInteger, nullable=False),
    Column("key_count", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("blob_id", String(43), nullable=False),
)

safety_detection_pending = Table(
    "safety_detection_pending",
    metadata,
    Column("voucher_id", String(_ID), primary_key=True),
    Column("account", String(_NAME), nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("window_id", LargeBinary(16), nullable=False),
    Column("voucher", LargeBinary, nullable=False),
    ms_column("claimed_until_ms"),
    Index("ix_safety_detection_pending_claim", "claimed_until_ms"),
)

safety_detection_opened = Table(
    "safety_detection_opened",
    metadata,
    Column("opened_id", String(_ID), primary_key=True),
    Column("account", String(_NAME), nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("window_id", LargeBinary(16), nullable=False),
    Column("share", LargeBinary, nullable=False),
    Column("inner_ct", LargeBinary, nullable=False),
    Column("evaluated", Boolean, nullable=False),
    Column("outcome", String(16), nullable=True),
    Column("opened_day", Integer, nullable=False, default=0),
    Index("ix_safety_detection_opened_window", "account", "device_id", "window_id"),
    Index("ix_safety_detection_opened_evaluated", "evaluated"),
)

safety_detection_matches = Table(
    "safety_detection_matches",
    metadata,
    Column("match_id", String(_ID), primary_key=True),
    Column("case_id", String(_ID), nullable=False, index=True),
    # One match per opened voucher: two nodes confirming one image store it once.
    Column("opened_id", String(_ID), nullable=False, unique=True),
    Column("account", String(_NAME), nullable=False),
    Column("device_id", Integer, nullable=False),
    Column("evidence_id", String(_ID), nullable=False),
    Column("attachment_id", String(_ID), nullable=False),
    Column("content_type", String(64), nullable=False),
    Column("message_id", LargeBinary(16), nullable=False),
    Column("device_pdq", LargeBinary(32), nullable=False),
    Column("server_pdq", LargeBinary(32), nullable=False),
    Column("distance", Integer, nullable=False),
    Column("entries", Text, nullable=False),  # JSON list of MatchedEntry.to_json()
    ms_column("matched_ms"),
)
