"""Reported attachments matched against the hash banks in the clear (issue 10):
``safety_report_matches``, one row per matching attachment of a report
(`tidings.storage.safety_schema`).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_report_matches",
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("attachment_index", sa.Integer(), nullable=False),
        sa.Column("attachment_id", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("pdq", sa.LargeBinary(length=32), nullable=True),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.Column("matched_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("report_id", "item_index", "attachment_index"),
    )


def downgrade() -> None:
    op.drop_table("safety_report_matches")
