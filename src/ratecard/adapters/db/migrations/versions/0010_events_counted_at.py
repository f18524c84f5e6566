"""events: counted_at, when a held event started counting

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25

Usage "as billed" is read as of the closing instant, by when events were received. A held event
released after its period was invoiced had been received before the closing, so it read as
billed although no invoice had counted it, and no adjustment ever carried it. Released events
now count from their release (`lifecycle.release_held`); NULL means since ``received_at``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import ratecard.adapters.db.types

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "counted_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("counted_at")
