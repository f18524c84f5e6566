"""events: the time index is keyed on the hour, entries in arrival order within it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25

The index on ``(tenant_id, mode, customer_id, meter_code, occurred_at)`` put each event at its
exact instant: live traffic, a few seconds late at random, landed anywhere in the last seconds
of every customer's range, and each commit rewrote a page per event or so. Keyed on the hour
(`event_store.hour_number`), the entries of one hour follow arrival, so a commit appends to a
page or two per (customer, meter). Reads of a time range select the hours, then the instants.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "ix_events_tenant_id_mode_customer_id_meter_code_occurred_at"
_NEW = "ix_events_tenant_id_mode_customer_id_meter_code_occurred_hour"
_KEY = ["tenant_id", "mode", "customer_id", "meter_code"]


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("occurred_hour", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # stored as fixed-width UTC text ('2024-03-01T11:00:00.250000+00:00'); never before 1970
        hours = "CAST(strftime('%s', substr(occurred_at, 1, 19)) AS INTEGER) / 3600"
    else:
        hours = "floor(extract(epoch FROM occurred_at) / 3600)::integer"
    op.execute(f"UPDATE events SET occurred_hour = {hours}")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("occurred_hour", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(_NEW, [*_KEY, "occurred_hour"], unique=False)
        batch_op.drop_index(_OLD)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(_OLD, [*_KEY, "occurred_at"], unique=False)
        batch_op.drop_index(_NEW)
        batch_op.drop_column("occurred_hour")
