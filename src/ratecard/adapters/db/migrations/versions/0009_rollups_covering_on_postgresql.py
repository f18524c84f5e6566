"""usage rollups: a covering index on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

PostgreSQL keeps table rows in a heap, in the order they were written: a customer's hours lie
on as many heap pages as there are hours, and a month's usage query read about a thousand of
them. The index carries the values too (``INCLUDE``), so the query reads a few index pages
(index-only, once autovacuum has marked the pages visible). SQLite's table is already
clustered on the key (``WITHOUT ROWID``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_usage_rollups_covering"
_KEY = ["tenant_id", "mode", "customer_id", "meter_code", "hour_at", "group_key"]
_VALUES = [
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
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(_NAME, "usage_rollups", _KEY, postgresql_include=_VALUES)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(_NAME, table_name="usage_rollups")
