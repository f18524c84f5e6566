"""events: on PostgreSQL, the primary key is (tenant_id, mode, seq)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

PostgreSQL kept two B-trees on arrival order: the primary key on ``seq`` and the event log's
index on ``(tenant_id, mode, seq)`` (0011). ``seq`` is unique by itself (a sequence), so the
scoped index is a key as well: it becomes the primary key and the other goes, one index
fewer to write per stored event. Every read by ``seq`` names its scope. SQLite keeps ``seq``
as its rowid, which costs no index, and the scoped index beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "pk_events"
_SCOPED = "ix_events_tenant_id_mode_seq"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(_KEY, "events", type_="primary")
    op.create_primary_key(_KEY, "events", ["tenant_id", "mode", "seq"])
    op.drop_index(_SCOPED, table_name="events")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(_SCOPED, "events", ["tenant_id", "mode", "seq"], unique=False)
    op.drop_constraint(_KEY, "events", type_="primary")
    op.create_primary_key(_KEY, "events", ["seq"])
