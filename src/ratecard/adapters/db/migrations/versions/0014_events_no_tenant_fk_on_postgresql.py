"""events: no foreign key to tenants on PostgreSQL

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

A foreign key is checked by a trigger per inserted row: PostgreSQL queued one check of
``tenants`` (``SELECT 1 ... FOR KEY SHARE``) for every stored event, about a sixth of the
server's time per event at full ingestion. Events are written only by ingestion, for the tenant
of the API key that sent them, and tenants are never deleted, so the check could never fail.
SQLite keeps the key: its check is one lookup in the same statement (measured: within noise).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOREIGN_KEY = "fk_events_tenant_id_tenants"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint(_FOREIGN_KEY, "events", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_foreign_key(_FOREIGN_KEY, "events", "tenants", ["tenant_id"], ["id"])
