"""Hash banks, and where a case came from.

- ``safety_banks``, ``safety_bank_entries`` (one per bank and value; ``device_eligible`` kept
  in step with the two-jurisdiction rule), ``safety_bank_sources`` (who supplied each entry,
  from where, when; removed rows kept for history) and ``safety_bank_list`` (the list
  version);
- ``safety_cases.source``: ``report`` (every existing case) or ``detection``.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("safety_cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="report", nullable=False)
        )
    op.create_table(
        "safety_banks",
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("bank_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "safety_bank_entries",
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("signal_type", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("added_ms", sa.BigInteger(), nullable=False),
        sa.Column("removed_ms", sa.BigInteger(), nullable=True),
        sa.Column("device_eligible", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id"),
    )
    op.create_index(
        "uq_safety_bank_entries_value",
        "safety_bank_entries",
        ["bank_id", "signal_type", "value"],
        unique=True,
    )
    op.create_index(
        "ix_safety_bank_entries_lists",
        "safety_bank_entries",
        ["signal_type", "removed_ms", "device_eligible", "value"],
        unique=False,
    )
    op.create_table(
        "safety_bank_sources",
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("organisation", sa.String(length=128), nullable=False),
        sa.Column("jurisdiction", sa.String(length=2), nullable=False),
        sa.Column("added_ms", sa.BigInteger(), nullable=False),
        sa.Column("removed_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("entry_id", "organisation", "added_ms"),
    )
    op.create_index(
        "ix_safety_bank_sources_organisation",
        "safety_bank_sources",
        ["organisation"],
        unique=False,
    )
    op.create_table(
        "safety_bank_list",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("safety_bank_list")
    op.drop_index("ix_safety_bank_sources_organisation", table_name="safety_bank_sources")
    op.drop_table("safety_bank_sources")
    op.drop_index("ix_safety_bank_entries_lists", table_name="safety_bank_entries")
    op.drop_index("uq_safety_bank_entries_value", table_name="safety_bank_entries")
    op.drop_table("safety_bank_entries")
    op.drop_table("safety_banks")
    with op.batch_alter_table("safety_cases", schema=None) as batch_op:
        batch_op.drop_column("source")
