"""Detection on the server (issue 10): published lists, pending vouchers, opened vouchers and
confirmed matches (`tidings.storage.detection_schema`).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "safety_detection_lists",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("signing_public", sa.LargeBinary(length=32), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("bank_list_version", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("entry_count", sa.BigInteger(), nullable=False),
        sa.Column("key_count", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("blob_id", sa.String(length=43), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "safety_detection_pending",
        sa.Column("voucher_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("window_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("voucher", sa.LargeBinary(), nullable=False),
        sa.Column("claimed_until_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("voucher_id"),
    )
    op.create_index(
        "ix_safety_detection_pending_claim", "safety_detection_pending", ["claimed_until_ms"]
    )
    op.create_table(
        "safety_detection_opened",
        sa.Column("opened_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("window_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("share", sa.LargeBinary(), nullable=False),
        sa.Column("inner_ct", sa.LargeBinary(), nullable=False),
        sa.Column("evaluated", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("opened_id"),
    )
    op.create_index(
        "ix_safety_detection_opened_window",
        "safety_detection_opened",
        ["account", "device_id", "window_id"],
    )
    op.create_index(
        "ix_safety_detection_opened_evaluated", "safety_detection_opened", ["evaluated"]
    )
    op.create_table(
        "safety_detection_matches",
        sa.Column("match_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("opened_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("evidence_id", sa.String(length=64), nullable=False),
        sa.Column("attachment_id", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_pdq", sa.LargeBinary(length=32), nullable=False),
        sa.Column("server_pdq", sa.LargeBinary(length=32), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.Column("matched_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("match_id"),
        sa.UniqueConstraint("opened_id"),
    )
    op.create_index("ix_safety_detection_matches_case_id", "safety_detection_matches", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_safety_detection_matches_case_id", table_name="safety_detection_matches")
    op.drop_table("safety_detection_matches")
    op.drop_index("ix_safety_detection_opened_evaluated", table_name="safety_detection_opened")
    op.drop_index("ix_safety_detection_opened_window", table_name="safety_detection_opened")
    op.drop_table("safety_detection_opened")
    op.drop_index("ix_safety_detection_pending_claim", table_name="safety_detection_pending")
    op.drop_table("safety_detection_pending")
    op.drop_table("safety_detection_lists")
