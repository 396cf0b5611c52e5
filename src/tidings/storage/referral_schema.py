"""The referral table (SQLAlchemy Core) on the shared `metadata`, migration ``0011``
(`tidings.safety.referrals`; records in `tidings.safety.referral_records`).

What is stored (the data inventory's "referrals"): for each CyberTipline referral, the case and
account it is about, who prepared and approved it and when, the referral document sent (file
names and hashes, never a file's bytes: those stay sealed in ``safety_evidence``), the
submission's progress and every step, NCMEC's report id, and the preservation hold placed.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text, UniqueConstraint

from tidings.storage.schema import metadata, ms_column

__all__ = ["safety_referrals"]

_ID = 64

safety_referrals = Table(
    "safety_referrals",
    metadata,
    Column("referral_id", String(_ID), primary_key=True),
    Column("case_id", String(_ID), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("account", String(_ID), nullable=False),
    Column("prepared_by", String(_ID), nullable=False),
    ms_column("prepared_ms"),
    Column("document", Text, nullable=False),
    Column("progress", Text, nullable=False),
    Column("steps", Text, nullable=False),
    Column("approval", String(16), nullable=False),
    Column("approved_by", String(_ID), nullable=True),
    ms_column("approved_ms", nullable=True),
    Column("state", String(24), nullable=False),
    Column("report_id", String(_ID), nullable=True),
    Column("file_count", Integer, nullable=False),
    ms_column("hold_until_ms", nullable=True),
    Column("retracted_by", String(_ID), nullable=True),
    ms_column("updated_ms"),
    Column("version", Integer, nullable=False),
    UniqueConstraint("case_id", "seq", name="uq_safety_referrals_case_seq"),
    Index("ix_safety_referrals_prepared", "prepared_ms"),
)
