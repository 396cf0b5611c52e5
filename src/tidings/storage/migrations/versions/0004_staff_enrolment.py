"""Staff enrolment and the two-person rule: enrolment links (SHA-256 of the token only),
pending privilege grants, and on ``safety_staff`` the sealed TOTP secret, the enrolment time and
the sponsor (who issued the link the account enrolled through).

Existing accounts were usable before this revision, so they count as enrolled (at their
creation time) with no sponsor. Their plaintext ``totp_secret`` stays in place here: Alembic
does not hold the ``staff.key`` file, so the safety service seals it into ``totp_sealed`` (and
blanks ``totp_secret``) on its first start (`tidings.safety.sql.SqlStaffRepository.seal_legacy`).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("safety_staff", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_sealed", sa.LargeBinary(length=256), nullable=True))
        batch_op.add_column(sa.Column("enrolled_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("sponsor", sa.String(length=64), server_default="", nullable=False)
        )
    op.execute("UPDATE safety_staff SET enrolled_ms = created_ms")
    op.create_table(
        "safety_staff_grants",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=False),
        sa.Column("decided_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id"),
    )
    with op.batch_alter_table("safety_staff_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_safety_staff_grants_staff_id"), ["staff_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_safety_staff_grants_status"), ["status"], unique=False)
    op.create_table(
        "safety_staff_enrolment",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_id", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("safety_staff_enrolment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_safety_staff_enrolment_staff_id"), ["staff_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("safety_staff_enrolment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_safety_staff_enrolment_staff_id"))
    op.drop_table("safety_staff_enrolment")
    with op.batch_alter_table("safety_staff_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_safety_staff_grants_status"))
        batch_op.drop_index(batch_op.f("ix_safety_staff_grants_staff_id"))
    op.drop_table("safety_staff_grants")
    with op.batch_alter_table("safety_staff", schema=None) as batch_op:
        batch_op.drop_column("sponsor")
        batch_op.drop_column("enrolled_ms")
        batch_op.drop_column("totp_sealed")
