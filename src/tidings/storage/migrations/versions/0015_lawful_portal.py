"""Lawful requests through the public portal (`tidings.console.portal`): the SHA-256 of the
requester's status-page access key (``access_hash``; the key itself is shown once and never
stored) and the emergency justification the requester gave at intake.

Revision ID: 0015
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("safety_lawful_requests") as batch:
        batch.add_column(sa.Column("access_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("emergency_justification", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("safety_lawful_requests") as batch:
        batch.drop_column("emergency_justification")
        batch.drop_column("access_hash")
