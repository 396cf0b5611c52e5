"""The console on any node: its per-process state moves into the database, and the queue
list pages get an index they can walk in order.

- ``safety_staff_sessions.exposure``: the wellbeing count of revealed media, per session;
- ``safety_staff_preferences``: each staff member's media overrides;
- ``safety_console_pending``: the first sign-in step (password sealed under the browser's
  handle, single use, expiring);
- ``ix_safety_cases_queue_order``: ``(queue_id, priority DESC, sla_due_ms, created_ms,
  case_id, state)``, the queue order (`tidings.safety.case_model.queue_order`), so a queue
  page is ORDER BY + LIMIT over an index and stepping to a neighbour is one keyset row;
- ``ix_safety_cases_queue_counts`` replaces ``ix_safety_cases_queue (queue_id, state)``
  with the same two leading columns plus ``sla_due_ms, lock_expires_ms, lock_holder``: the
  queue counts' GROUP BY is then answered from the index alone.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("safety_staff_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("exposure", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "safety_staff_preferences",
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("blur", sa.Boolean(), nullable=True),
        sa.Column("greyscale", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("staff_id"),
    )
    op.create_table(
        "safety_console_pending",
        sa.Column("handle_hash", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_sealed", sa.LargeBinary(length=1024), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("handle_hash"),
    )
    with op.batch_alter_table("safety_console_pending", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_safety_console_pending_expires_ms"), ["expires_ms"], unique=False
        )
    op.create_index(
        "ix_safety_cases_queue_order",
        "safety_cases",
        ["queue_id", sa.text("priority DESC"), "sla_due_ms", "created_ms", "case_id", "state"],
        unique=False,
    )
    op.create_index(
        "ix_safety_cases_queue_counts",
        "safety_cases",
        ["queue_id", "state", "sla_due_ms", "lock_expires_ms", "lock_holder"],
        unique=False,
    )
    op.drop_index("ix_safety_cases_queue", table_name="safety_cases")


def downgrade() -> None:
    op.create_index("ix_safety_cases_queue", "safety_cases", ["queue_id", "state"], unique=False)
    op.drop_index("ix_safety_cases_queue_counts", table_name="safety_cases")
    op.drop_index("ix_safety_cases_queue_order", table_name="safety_cases")
    with op.batch_alter_table("safety_console_pending", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_safety_console_pending_expires_ms"))
    op.drop_table("safety_console_pending")
    op.drop_table("safety_staff_preferences")
    with op.batch_alter_table("safety_staff_sessions", schema=None) as batch_op:
        batch_op.drop_column("exposure")
