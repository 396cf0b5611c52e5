"""Key transparency's published log (issue 12): `tidings.storage.kt_schema`.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kt_device_lists",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("label", sa.LargeBinary(length=32), nullable=False),
        sa.Column("list_bytes", sa.LargeBinary(), nullable=False),
        sa.Column("list_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("submitted_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("account", "version"),
    )
    op.create_index("ix_kt_device_lists_epoch", "kt_device_lists", ["epoch"])
    op.create_table(
        "kt_epochs",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("audit", sa.LargeBinary(), nullable=False),
        sa.Column("cosignatures", sa.LargeBinary(), nullable=False),
        sa.Column("published_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("epoch"),
    )


def downgrade() -> None:
    op.drop_table("kt_epochs")
    op.drop_index("ix_kt_device_lists_epoch", table_name="kt_device_lists")
    op.drop_table("kt_device_lists")
