"""Refused-report counts per UTC day and reason (issue 11): `tidings.storage.refusals_schema`.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_report_refusals",
        sa.Column("day", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "reason"),
    )


def downgrade() -> None:
    op.drop_table("safety_report_refusals")
