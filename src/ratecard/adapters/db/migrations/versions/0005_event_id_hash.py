"""events: SQLite deduplicates on a compact hash of the event id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Random event ids land on random pages of the dedup index, and every commit rewrites each page
it touched. On SQLite the unique index on ``(tenant_id, mode, event_id)`` (about 80 bytes an
entry) gives way to an index on ``id_hash`` (6 bytes): a few times fewer pages to rewrite per
commit. Ingestion holds SQLite's write lock while it checks and inserts, and compares the full
id of every row with the same hash, so dedup stays exact. PostgreSQL keeps its unique index
(concurrent writers merge with ``ON CONFLICT``); there ``id_hash`` stays NULL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ratecard.adapters.db.event_ids import id_hash

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNIQUE = "uq_events_tenant_id_mode_event_id"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("id_hash", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    rows = bind.execute(sa.text("SELECT seq, tenant_id, mode, event_id FROM events")).fetchall()
    if rows:
        bind.execute(
            sa.text("UPDATE events SET id_hash = :h WHERE seq = :s"),
            [{"h": id_hash(t, m, e), "s": s} for s, t, m, e in rows],
        )
    with op.batch_alter_table("events", schema=None, recreate="always") as batch_op:
        batch_op.drop_constraint(_UNIQUE, type_="unique")
        batch_op.create_index("ix_events_id_hash", ["id_hash"], unique=False)


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("events", schema=None, recreate="auto") as batch_op:
        if bind.dialect.name == "sqlite":
            batch_op.drop_index("ix_events_id_hash")
            batch_op.create_unique_constraint(_UNIQUE, ["tenant_id", "mode", "event_id"])
        batch_op.drop_column("id_hash")
