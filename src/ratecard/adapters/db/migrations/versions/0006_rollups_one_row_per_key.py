"""usage rollups: one row per (customer, meter, hour, group), merged on write

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

Ingestion used to append a partial per commit and key, so a busy customer's usage query read
more rows with every commit. Now each key has one row (the primary key) that ingestion merges
into; on SQLite the table is ``WITHOUT ROWID``, clustered on that key, so a customer's hours
are contiguous pages. The partials already stored are merged here, exactly (`Partial.merge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from ratecard.adapters.db.types import ExactDecimal, UtcDateTime
from ratecard.core.rollups import Partial

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ("tenant_id", "mode", "customer_id", "meter_code", "hour_at", "group_key")
_VALUES = (
    "event_count",
    "value_count",
    "value_sum",
    "value_min",
    "value_max",
    "latest_value",
    "latest_at",
    "latest_seq",
)


def _columns() -> list[sa.Column[Any]]:
    return [
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
        sa.Column("hour_at", UtcDateTime(length=32), nullable=False),
        sa.Column("group_key", sa.String(length=1000), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("value_count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", ExactDecimal(length=80), nullable=False),
        sa.Column("value_min", ExactDecimal(length=80), nullable=True),
        sa.Column("value_max", ExactDecimal(length=80), nullable=True),
        sa.Column("latest_value", ExactDecimal(length=80), nullable=True),
        sa.Column("latest_at", UtcDateTime(length=32), nullable=True),
        sa.Column("latest_seq", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    old = sa.Table("usage_rollups", sa.MetaData(), *_columns())
    merged: dict[tuple[Any, ...], Partial] = {}
    for row in bind.execute(sa.select(old)).mappings():
        key = tuple(row[c] for c in _KEY)
        partial = Partial(*(row[c] for c in _VALUES))
        current = merged.get(key)
        merged[key] = partial if current is None else current.merge(partial)
    op.drop_table("usage_rollups")
    new = op.create_table(
        "usage_rollups",
        *_columns(),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_rollups_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint(*_KEY, name=op.f("pk_usage_rollups")),
        sqlite_with_rowid=False,
    )
    assert new is not None
    rows = [
        dict(zip(_KEY, key, strict=True)) | {c: getattr(partial, c) for c in _VALUES}
        for key, partial in sorted(merged.items(), key=lambda item: repr(item[0]))
    ]
    if rows:
        op.bulk_insert(new, rows)


def downgrade() -> None:
    bind = op.get_bind()
    current = sa.Table("usage_rollups", sa.MetaData(), *_columns())
    rows = [dict(row) for row in bind.execute(sa.select(current)).mappings()]
    op.drop_table("usage_rollups")
    old = op.create_table(
        "usage_rollups",
        *_columns()[:2],
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        *_columns()[2:],
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_rollups_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollups")),
    )
    assert old is not None
    op.create_index("ix_usage_rollups_read", "usage_rollups", [*_KEY[:5], *_KEY[5:], *_VALUES])
    if rows:
        op.bulk_insert(old, rows)
