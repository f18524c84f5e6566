"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import ratecard.adapters.db.types

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("default_currency", sa.String(length=3), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("rounding_mode", sa.String(length=20), nullable=False),
        sa.Column("proration_convention", sa.String(length=20), nullable=False),
        sa.Column("net_terms_days", sa.Integer(), nullable=False),
        sa.Column("invoice_number_prefix", sa.String(length=20), nullable=False),
        sa.Column(
            "branding",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )
    op.create_table(
        "api_keys",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "admin",
                "billing",
                "read_only",
                "ingest",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("revoked_at", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.Column("last_used_at", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_api_keys_secret_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_keys_tenant_id_mode_created_at"),
            ["tenant_id", "mode", "created_at"],
            unique=False,
        )

    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_audit_heads_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_heads")),
    )
    op.create_table(
        "audit_log",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=True,
        ),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("object_type", sa.String(length=60), nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=True),
        sa.Column(
            "before",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column(
            "after",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_audit_log_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_log_tenant_id_object_type_object_id"),
            ["tenant_id", "object_type", "object_id"],
            unique=False,
        )

    op.create_table(
        "coupons",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("percent_off", ratecard.adapters.db.types.ExactDecimal(), nullable=True),
        sa.Column("amount_off_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("duration", sa.String(length=20), nullable=False),
        sa.Column("duration_periods", sa.Integer(), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("redeem_by", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off_minor IS NULL)",
            name=op.f("ck_coupons_one_discount"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_coupons_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "code", name=op.f("uq_coupons_tenant_id_mode_code")
        ),
    )
    op.create_table(
        "customers",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column(
            "billing_address",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column(
            "tax_ids",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("net_terms_days", sa.Integer(), nullable=True),
        sa.Column("parent_customer_id", sa.String(length=40), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "parent_customer_id"],
            ["customers.tenant_id", "customers.mode", "customers.id"],
            name=op.f("fk_customers_tenant_id_mode_parent_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_customers_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "external_id", name=op.f("uq_customers_tenant_id_mode_external_id")
        ),
        sa.UniqueConstraint("tenant_id", "mode", "id", name=op.f("uq_customers_tenant_id_mode_id")),
    )
    op.create_table(
        "features",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("meter_code", sa.String(length=100), nullable=True),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_features_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_features")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "code", name=op.f("uq_features_tenant_id_mode_code")
        ),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column(
            "response_body",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("completed_at", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('in_progress', 'done')", name=op.f("ck_idempotency_keys_status")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_idempotency_keys_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "key", name=op.f("uq_idempotency_keys_tenant_id_mode_key")
        ),
    )
    op.create_table(
        "meters",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("aggregation", sa.String(length=30), nullable=False),
        sa.Column("value_field", sa.String(length=200), nullable=True),
        sa.Column("reset", sa.String(length=20), nullable=False),
        sa.Column("snapshot", sa.Boolean(), nullable=False),
        sa.Column(
            "filters",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_meters_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meters")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "code", name=op.f("uq_meters_tenant_id_mode_code")
        ),
    )
    op.create_table(
        "plans",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_plans_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("tenant_id", "mode", "code", name=op.f("uq_plans_tenant_id_mode_code")),
    )
    op.create_table(
        "plan_versions",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plan_code", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "document",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("published_at", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('draft', 'published', 'archived')", name=op.f("ck_plan_versions_status")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "plan_code"],
            ["plans.tenant_id", "plans.mode", "plans.code"],
            name=op.f("fk_plan_versions_tenant_id_mode_plan_code_plans"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_plan_versions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_versions")),
        sa.UniqueConstraint(
            "tenant_id",
            "mode",
            "plan_code",
            "version",
            name=op.f("uq_plan_versions_tenant_id_mode_plan_code_version"),
        ),
    )
    op.create_table(
        "price_overrides",
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
        sa.Column("plan_code", sa.String(length=100), nullable=False),
        sa.Column("charge_code", sa.String(length=100), nullable=False),
        sa.Column(
            "price",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "customer_id"],
            ["customers.tenant_id", "customers.mode", "customers.id"],
            name=op.f("fk_price_overrides_tenant_id_mode_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_price_overrides_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_overrides")),
        sa.UniqueConstraint(
            "tenant_id",
            "mode",
            "customer_id",
            "plan_code",
            "charge_code",
            name=op.f("uq_price_overrides_tenant_id_mode_customer_id_plan_code_charge_code"),
        ),
    )
    op.create_table(
        "subscriptions",
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
        sa.Column("plan_code", sa.String(length=100), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("quantity", ratecard.adapters.db.types.ExactDecimal(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("anchor_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column(
            "current_period_start_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False
        ),
        sa.Column(
            "current_period_end_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False
        ),
        sa.Column("trial_ends_at", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", ratecard.adapters.db.types.UtcDateTime(), nullable=True),
        sa.Column(
            "pending_change",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("created_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "customer_id"],
            ["customers.tenant_id", "customers.mode", "customers.id"],
            name=op.f("fk_subscriptions_tenant_id_mode_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "plan_code", "plan_version"],
            [
                "plan_versions.tenant_id",
                "plan_versions.mode",
                "plan_versions.plan_code",
                "plan_versions.version",
            ],
            name=op.f("fk_subscriptions_tenant_id_mode_plan_code_plan_version_plan_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_subscriptions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint(
            "tenant_id", "mode", "id", name=op.f("uq_subscriptions_tenant_id_mode_id")
        ),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriptions_tenant_id_mode_customer_id"),
            ["tenant_id", "mode", "customer_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_subscriptions_tenant_id_mode_status_current_period_end_at"),
            ["tenant_id", "mode", "status", "current_period_end_at"],
            unique=False,
        )

    op.create_table(
        "subscription_changes",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "mode",
            sa.Enum(
                "live", "test", name="mode", native_enum=False, create_constraint=True, length=20
            ),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("command", sa.String(length=60), nullable=False),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("effective_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("recorded_at", ratecard.adapters.db.types.UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "mode", "subscription_id"],
            ["subscriptions.tenant_id", "subscriptions.mode", "subscriptions.id"],
            name=op.f("fk_subscription_changes_tenant_id_mode_subscription_id_subscriptions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_subscription_changes_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_changes")),
        sa.UniqueConstraint(
            "tenant_id",
            "mode",
            "subscription_id",
            "seq",
            name=op.f("uq_subscription_changes_tenant_id_mode_subscription_id_seq"),
        ),
    )


def downgrade() -> None:

    op.drop_table("subscription_changes")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(
            batch_op.f("ix_subscriptions_tenant_id_mode_status_current_period_end_at")
        )
        batch_op.drop_index(batch_op.f("ix_subscriptions_tenant_id_mode_customer_id"))

    op.drop_table("subscriptions")
    op.drop_table("price_overrides")
    op.drop_table("plan_versions")
    op.drop_table("plans")
    op.drop_table("meters")
    op.drop_table("idempotency_keys")
    op.drop_table("features")
    op.drop_table("customers")
    op.drop_table("coupons")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_tenant_id_object_type_object_id"))

    op.drop_table("audit_log")
    op.drop_table("audit_heads")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_tenant_id_mode_created_at"))

    op.drop_table("api_keys")
    op.drop_table("tenants")
