"""tenants.meters_revision: a count of the changes to the tenant's meters

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

Every write of a meter's row raises it (`models.MeterRow`'s mapper events). A usage report
reads it with the customer's subscriptions, and takes the meters' definitions from its
process's cache while the revision it cached them at is still current: one statement fewer
per report.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN on both engines: SQLite's batch mode would copy `tenants`, and dropping
    # the old table fails its foreign keys once other tables refer to it.
    op.add_column(
        "tenants", sa.Column("meters_revision", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("tenants", "meters_revision")
