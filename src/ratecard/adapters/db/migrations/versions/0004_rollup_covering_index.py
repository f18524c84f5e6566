"""usage rollups: a covering index for usage reads

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "ix_usage_rollups_tenant_id_mode_customer_id_meter_code_hour_at"
_KEY = ["tenant_id", "mode", "customer_id", "meter_code", "hour_at"]
_COVERED = [
    "group_key",
    "event_count",
    "value_count",
    "value_sum",
    "value_min",
    "value_max",
    "latest_value",
    "latest_at",
    "latest_seq",
]


def upgrade() -> None:
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.create_index("ix_usage_rollups_read", _KEY + _COVERED, unique=False)
        batch_op.drop_index(_OLD)


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.create_index(_OLD, _KEY, unique=False)
        batch_op.drop_index("ix_usage_rollups_read")
