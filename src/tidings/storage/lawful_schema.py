"""The lawful-request table (SQLAlchemy Core) on the shared `metadata`, migrations ``0012``
and ``0015`` (the portal's access hash and the requester's emergency justification)
(`tidings.safety.lawful`; records in `tidings.safety.lawful_model`).

What is stored (the data inventory's "lawful_requests"): for each request, who asked (agency,
officer, the officer's e-mail, the country), under what (case number, legal basis, type), the
account and the categories asked for and kept, each workflow step's time, the SHA-256 of the
verification token and of the portal's status-page access key (never either key), the
produced package's manifest hash, a non-disclosure order's end and when the user notice is
due. ``safety_lawful_packages`` (migration ``0017``) keeps the produced package itself, the
zip archive as downloaded, one per request: the record of what was disclosed.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, LargeBinary, String, Table, Text

from tidings.storage.schema import metadata, ms_column

__all__ = ["safety_lawful_packages", "safety_lawful_requests"]

_ID = 64

safety_lawful_requests = Table(
    "safety_lawful_requests",
    metadata,
    Column("request_id", String(_ID), primary_key=True),
    Column("agency", String(200), nullable=False),
    Column("officer_name", String(200), nullable=False),
    Column("officer_email", String(320), nullable=False),
    Column("country", String(2), nullable=False),
    Column("case_number", String(200), nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("kind", String(24), nullable=False),
    Column("account", String(_ID), nullable=False),
    Column("requested", Text, nullable=False),
    ms_column("received_ms"),
    ms_column("due_ms"),
    Column("received_by", String(_ID), nullable=False),
    Column("domain_allowed", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("token_hash", String(64), nullable=True),
    ms_column("token_expires_ms", nullable=True),
    Column("outbox", Text, nullable=False),
    ms_column("verified_ms", nullable=True),
    Column("scope", Text, nullable=False),
    Column("dropped", Text, nullable=False),
    Column("justification", Text, nullable=True),
    Column("emergency_justification", Text, nullable=True),
    Column("reject_reason", Text, nullable=True),
    Column("hold_id", String(_ID), nullable=True),
    Column("manifest_sha256", String(64), nullable=True),
    ms_column("produced_ms", nullable=True),
    ms_column("delivered_ms", nullable=True),
    ms_column("closed_ms", nullable=True),
    ms_column("ndo_until_ms", nullable=True),
    Column("ndo_reference", String(200), nullable=True),
    ms_column("notice_due_ms", nullable=True),
    Column("access_hash", String(64), nullable=True),
    ms_column("updated_ms"),
    Column("version", Integer, nullable=False),
    Index("ix_safety_lawful_requests_received", "received_ms"),
    Index("ix_safety_lawful_requests_notice", "notice_due_ms"),
)

safety_lawful_packages = Table(
    "safety_lawful_packages",
    metadata,
    Column("request_id", String(_ID), primary_key=True),
    Column("manifest_sha256", String(64), nullable=False),
    ms_column("created_ms"),
    Column("archive", LargeBinary, nullable=False),
)
