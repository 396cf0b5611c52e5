"""Lawful requests (issue 11): one row per law-enforcement request for user data
(`tidings.storage.lawful_schema`).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_lawful_requests",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("agency", sa.String(length=200), nullable=False),
        sa.Column("officer_name", sa.String(length=200), nullable=False),
        sa.Column("officer_email", sa.String(length=320), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("case_number", sa.String(length=200), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("requested", sa.Text(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("due_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_by", sa.String(length=64), nullable=False),
        sa.Column("domain_allowed", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("token_expires_ms", sa.BigInteger(), nullable=True),
        sa.Column("outbox", sa.Text(), nullable=False),
        sa.Column("verified_ms", sa.BigInteger(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("dropped", sa.Text(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("hold_id", sa.String(length=64), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("produced_ms", sa.BigInteger(), nullable=True),
        sa.Column("delivered_ms", sa.BigInteger(), nullable=True),
        sa.Column("closed_ms", sa.BigInteger(), nullable=True),
        sa.Column("ndo_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("ndo_reference", sa.String(length=200), nullable=True),
        sa.Column("notice_due_ms", sa.BigInteger(), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(
        "ix_safety_lawful_requests_received", "safety_lawful_requests", ["received_ms"]
    )
    op.create_index(
        "ix_safety_lawful_requests_notice", "safety_lawful_requests", ["notice_due_ms"]
    )


def downgrade() -> None:
    op.drop_index("ix_safety_lawful_requests_notice", table_name="safety_lawful_requests")
    op.drop_index("ix_safety_lawful_requests_received", table_name="safety_lawful_requests")
    op.drop_table("safety_lawful_requests")
