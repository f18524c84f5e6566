"""meter rounding: meters.rounding_mode and meters.rounding_precision

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rounding_mode", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("rounding_precision", sa.Integer(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_meters_rounding"), "(rounding_mode IS NULL) = (rounding_precision IS NULL)"
        )
        batch_op.create_check_constraint(
            op.f("ck_meters_rounding_precision"), "rounding_precision >= 0"
        )


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_meters_rounding_precision"), type_="check")
        batch_op.drop_constraint(op.f("ck_meters_rounding"), type_="check")
        batch_op.drop_column("rounding_precision")
        batch_op.drop_column("rounding_mode")
