"""Opened detection vouchers record the day they were opened, so idle windows can be deleted
(`tidings.safety.detection.DetectionService.purge_idle_windows`). Existing records get the day
of the migration: their windows start a fresh retention period.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    today = int(time.time()) // 86_400
    with op.batch_alter_table("safety_detection_opened") as batch:
        batch.add_column(
            sa.Column("opened_day", sa.Integer(), nullable=False, server_default=str(today))
        )


def downgrade() -> None:
    with op.batch_alter_table("safety_detection_opened") as batch:
        batch.drop_column("opened_day")
