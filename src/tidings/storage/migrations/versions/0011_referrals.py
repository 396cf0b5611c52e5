"""Referrals to NCMEC's CyberTipline (issue 11): one row per referral
(`tidings.storage.referral_schema`).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_referrals",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("prepared_by", sa.String(length=64), nullable=False),
        sa.Column("prepared_ms", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("approval", sa.String(length=16), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_ms", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=True),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("hold_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("retracted_by", sa.String(length=64), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("referral_id"),
        sa.UniqueConstraint("case_id", "seq", name="uq_safety_referrals_case_seq"),
    )
    op.create_index("ix_safety_referrals_prepared", "safety_referrals", ["prepared_ms"])


def downgrade() -> None:
    op.drop_index("ix_safety_referrals_prepared", table_name="safety_referrals")
    op.drop_table("safety_referrals")
