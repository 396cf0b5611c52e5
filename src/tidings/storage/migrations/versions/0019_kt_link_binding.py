"""A linked device's key-transparency link binding (`devices.link_binding`): the HMAC, under
the link code's local secret, of the account and the new device's identity key, which the
existing device checks before it signs a device list naming the new device.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (nullable): SQLite needs no table rebuild, which would drop and
    # recreate the table the prekeys and queues reference.
    op.add_column("devices", sa.Column("link_binding", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("devices", "link_binding")
