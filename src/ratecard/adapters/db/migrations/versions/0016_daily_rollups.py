"""usage rollups by day: a row a sealed UTC day for each (customer, meter, group)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

A current-period usage query read one hourly rollup row per hour and group: 744 a group for a
month, most of its time with 10 million events stored. Each UTC day that is over is now merged
into one row (`rollup_seal.seal_rollups`), kept exact by every later write to its hours; a
query reads the whole days from them and hourly rows only for the hours around them. The seal
row says up to which midnight the daily rows are complete (none yet here: the first sealing
makes them for every stored day).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ratecard.adapters.db.types import ExactDecimal, UtcDateTime

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ["tenant_id", "mode", "customer_id", "meter_code", "day_at", "group_key"]
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
    op.create_table(
        "usage_rollups_daily",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=False),
        sa.Column("day_at", UtcDateTime(length=32), nullable=False),
        sa.Column("group_key", sa.String(length=1000), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("value_count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", ExactDecimal(length=80), nullable=False),
        sa.Column("value_min", ExactDecimal(length=80), nullable=True),
        sa.Column("value_max", ExactDecimal(length=80), nullable=True),
        sa.Column("latest_value", ExactDecimal(length=80), nullable=True),
        sa.Column("latest_at", UtcDateTime(length=32), nullable=True),
        sa.Column("latest_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_rollups_daily_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint(*_KEY, name=op.f("pk_usage_rollups_daily")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":  # index-only reads, as the hourly rows (0015)
        op.drop_constraint("pk_usage_rollups_daily", "usage_rollups_daily", type_="primary")
        op.execute(
            "ALTER TABLE usage_rollups_daily ADD CONSTRAINT pk_usage_rollups_daily "
            f"PRIMARY KEY ({', '.join(_KEY)}) INCLUDE ({', '.join(_VALUES)})"
        )
    seal = op.create_table(
        "rollup_seal",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sealed_before", UtcDateTime(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_seal")),
    )
    assert seal is not None
    op.bulk_insert(seal, [{"id": 1, "sealed_before": None}])


def downgrade() -> None:
    op.drop_table("rollup_seal")
    op.drop_table("usage_rollups_daily")
