"""metering: events, rollups, policies, closures, alerts, outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ratecard.adapters.db.types

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=False),
        sa.Column("customer_ref", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("occurred_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False),
        sa.Column("received_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False),
        sa.Column(
            "properties",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_events_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "event_id", name=op.f("uq_events_tenant_id_mode_event_id")
        ),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_tenant_id_mode_customer_id_meter_code_occurred_at"),
            ["tenant_id", "mode", "customer_id", "meter_code", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "metering_policies",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("unknown_customer", sa.String(length=10), nullable=False),
        sa.Column("unknown_meter", sa.String(length=10), nullable=False),
        sa.Column("late_events", sa.String(length=10), nullable=False),
        sa.Column("max_past_seconds", sa.BigInteger(), nullable=False),
        sa.Column("max_future_seconds", sa.BigInteger(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column(
            "purged_before_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=True
        ),
        sa.CheckConstraint(
            "late_events IN ('adjust', 'reject')", name=op.f("ck_metering_policies_late_events")
        ),
        sa.CheckConstraint(
            "unknown_customer IN ('reject', 'hold')",
            name=op.f("ck_metering_policies_unknown_customer"),
        ),
        sa.CheckConstraint(
            "unknown_meter IN ('reject', 'hold')", name=op.f("ck_metering_policies_unknown_meter")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_metering_policies_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metering_policies")),
        sa.UniqueConstraint("tenant_id", "mode", name=op.f("uq_metering_policies_tenant_id_mode")),
    )
    op.create_table(
        "usage_rollups",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=False),
        sa.Column("hour_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False),
        sa.Column("group_key", sa.String(length=1000), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("value_count", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", ratecard.adapters.db.types.ExactDecimal(length=80), nullable=False),
        sa.Column("value_min", ratecard.adapters.db.types.ExactDecimal(length=80), nullable=True),
        sa.Column("value_max", ratecard.adapters.db.types.ExactDecimal(length=80), nullable=True),
        sa.Column(
            "latest_value", ratecard.adapters.db.types.ExactDecimal(length=80), nullable=True
        ),
        sa.Column("latest_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=True),
        sa.Column("latest_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_rollups_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_rollups")),
    )
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_rollups_tenant_id_mode_customer_id_meter_code_hour_at"),
            ["tenant_id", "mode", "customer_id", "meter_code", "hour_at"],
            unique=False,
        )

    op.create_table(
        "webhook_outbox",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False),
        sa.Column("delivered_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_outbox_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_outbox")),
        sa.UniqueConstraint(
            "tenant_id",
            "mode",
            "dedup_key",
            name=op.f("uq_webhook_outbox_tenant_id_mode_dedup_key"),
        ),
    )
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_outbox_tenant_id_mode_delivered_at"),
            ["tenant_id", "mode", "delivered_at"],
            unique=False,
        )

    op.create_table(
        "usage_alerts",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=10), nullable=False),
        sa.Column("threshold", ratecard.adapters.db.types.ExactDecimal(length=80), nullable=False),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False),
        sa.CheckConstraint("metric IN ('usage', 'spend')", name=op.f("ck_usage_alerts_metric")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "customer_id"],
            ["customers.tenant_id", "customers.mode", "customers.id"],
            name=op.f("fk_usage_alerts_tenant_id_mode_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_alerts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_alerts")),
    )
    with op.batch_alter_table("usage_alerts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_alerts_tenant_id_mode_customer_id_meter_code"),
            ["tenant_id", "mode", "customer_id", "meter_code"],
            unique=False,
        )

    op.create_table(
        "usage_closures",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column(
            "period_start_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False
        ),
        sa.Column(
            "period_end_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False
        ),
        sa.Column("closed_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=False),
        sa.Column("adjusted_at", ratecard.adapters.db.types.UtcDateTime(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "customer_id"],
            ["customers.tenant_id", "customers.mode", "customers.id"],
            name=op.f("fk_usage_closures_tenant_id_mode_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_closures_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_closures")),
        sa.UniqueConstraint(
            "tenant_id",
            "mode",
            "customer_id",
            "period_end_at",
            name=op.f("uq_usage_closures_tenant_id_mode_customer_id_period_end_at"),
        ),
    )
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "group_by",
                sa.JSON(none_as_null=True).with_variant(
                    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
                ),
                nullable=False,
                server_default="[]",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("group_by")

    op.drop_table("usage_closures")
    with op.batch_alter_table("usage_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_alerts_tenant_id_mode_customer_id_meter_code"))

    op.drop_table("usage_alerts")
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_outbox_tenant_id_mode_delivered_at"))

    op.drop_table("webhook_outbox")
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_usage_rollups_tenant_id_mode_customer_id_meter_code_hour_at")
        )

    op.drop_table("usage_rollups")
    op.drop_table("metering_policies")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_events_tenant_id_mode_customer_id_meter_code_occurred_at")
        )

    op.drop_table("events")
