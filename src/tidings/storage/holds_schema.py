"""Preservation holds (SQLAlchemy Core) on the shared `metadata`, migration ``0010``
(`tidings.safety.holds`): one row per hold, with the JSON snapshot of the records it froze
(subscriber record, devices and their public keys, attachment metadata; never content)."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, String, Table, Text

from tidings.storage.schema import metadata, ms_column

__all__ = ["safety_holds"]

safety_holds = Table(
    "safety_holds",
    metadata,
    Column("hold_id", String(64), primary_key=True),
    Column("account", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("reference", String(200), nullable=False),
    Column("case_id", String(64), nullable=True),
    Column("placed_by", String(64), nullable=False),
    ms_column("placed_ms"),
    ms_column("until_ms"),
    Column("snapshot", Text, nullable=False),
    ms_column("released_ms", nullable=True),
    Column("released_by", String(64), nullable=True),
    Column("release_reason", Text, nullable=True),
    Column("cleared", Boolean, nullable=False, default=False),
    Index("ix_safety_holds_account", "account"),
)
