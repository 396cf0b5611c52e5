"""Refused-report counts (SQLAlchemy Core) on the shared `metadata`, migration ``0016``
(`tidings.safety.refusals`): one row per (UTC day, reason code) with how many reports
verification refused — only the count, nothing of the report."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from tidings.storage.schema import metadata

__all__ = ["safety_report_refusals"]

safety_report_refusals = Table(
    "safety_report_refusals",
    metadata,
    Column("day", Integer, primary_key=True, autoincrement=False),  # days since 1970-01-01 UTC
    Column("reason", String(64), primary_key=True),  # the refusal's error code
    Column("count", BigInteger, nullable=False),
)
