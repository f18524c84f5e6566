"""events: an index on (tenant_id, mode, seq) for the event log's pages

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25

``GET /v1/events`` lists a scope's events the latest first (``seq`` descending). Without this
index the pages walked the primary key (``seq`` alone) and skipped every other tenant's events:
one tenant's first page cost as much as all the events stored after its latest. Arrival order
appends to the index, so ingestion pays little for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_events_tenant_id_mode_seq"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(_NAME, ["tenant_id", "mode", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(_NAME)
