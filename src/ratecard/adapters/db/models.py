"""The tables, as SQLAlchemy 2 typed ORM mappings.

Rules held here (tests check them):
- every tenant table starts with ``tenant_id`` and ``mode``; every unique key and index begins
  with ``(tenant_id, mode)``, and references between tenant rows are composite foreign keys
  ``(tenant_id, mode, x_id)``, so the database itself refuses a link across tenants or modes;
- money is ``<name>_minor`` (BigInteger) plus ``currency``; decimals are `ExactDecimal`;
  instants are `UtcDateTime`; documents are `Json`; there is no Float column;
- ``audit_log`` and ``subscription_changes`` are append-only (the unit of work refuses updates
  and deletes of them).

The one key not led by ``tenant_id`` is ``api_keys.secret_hash``: authentication looks a key up
by its hash before the tenant is known.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    event,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ratecard.adapters.db.scope import Mode, Role
from ratecard.adapters.db.types import ExactDecimal, Json, UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(40)
CODE = String(100)


def _enum(cls: type[Mode] | type[Role], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UtcDateTime(),
        Decimal: ExactDecimal(),
        dict[str, Any]: Json(),
        list[Any]: Json(),
        Mode: _enum(Mode, "mode"),
        Role: _enum(Role, "role"),
    }


class TenantScoped:
    """Mixin: a row that belongs to one tenant, in one mode."""

    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id"), sort_order=-10)
    mode: Mapped[Mode] = mapped_column(sort_order=-9)


def _scoped_fk(columns: list[str], table: str, remote: list[str]) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", "mode", *columns],
        [f"{table}.tenant_id", f"{table}.mode", *(f"{table}.{c}" for c in remote)],
    )


# --- tenancy ---------------------------------------------------------------------------------


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    default_currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    rounding_mode: Mapped[str] = mapped_column(String(20))
    proration_convention: Mapped[str] = mapped_column(String(20))
    net_terms_days: Mapped[int] = mapped_column(Integer)
    invoice_number_prefix: Mapped[str] = mapped_column(String(20))
    branding: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    #: Test mode's frozen "now" once moved (``None``: test mode follows the real clock).
    test_clock_at: Mapped[datetime | None]
    #: Raised by every write of one of the tenant's meters (`MeterRow`'s mapper events): what
    #: a cache of the meters' definitions is checked against (migration 0017).
    meters_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiKeyRow(TenantScoped, Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("secret_hash"),
        Index(None, "tenant_id", "mode", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    role: Mapped[Role]
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))  # shown in lists: "rk_live_3f9a"
    secret_hash: Mapped[str] = mapped_column(String(64), info={"audit": False})
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None] = mapped_column(info={"audit": False})


class AuditHeadRow(Base):
    """The last link of each tenant's audit chain; locking it serializes appends."""

    __tablename__ = "audit_heads"

    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditEntryRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "tenant_id", "object_type", "object_id"),)

    tenant_id: Mapped[str] = mapped_column(ID, ForeignKey("tenants.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    mode: Mapped[Mode | None]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    object_type: Mapped[str] = mapped_column(String(60))
    object_id: Mapped[str | None] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class IdempotencyKeyRow(TenantScoped, Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "key"),
        CheckConstraint("status IN ('in_progress', 'done')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    response_status: Mapped[int | None]
    response_body: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


# --- catalog ---------------------------------------------------------------------------------


class MeterRow(TenantScoped, Base):
    __tablename__ = "meters"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "code"),
        CheckConstraint("(rounding_mode IS NULL) = (rounding_precision IS NULL)", name="rounding"),
        CheckConstraint("rounding_precision >= 0", name="rounding_precision"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(CODE)
    name: Mapped[str] = mapped_column(String(200))
    aggregation: Mapped[str] = mapped_column(String(30))  # sum, count, max, unique_count, latest
    value_field: Mapped[str | None] = mapped_column(String(200))
    reset: Mapped[str] = mapped_column(String(20), default="monthly")  # monthly, daily, never
    snapshot: Mapped[bool] = mapped_column(Boolean, default=False)  # a gauge, not a sum
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    group_by: Mapped[list[Any]] = mapped_column(default=list)  # property names, in order
    # The period's quantity rounded at read (raw events and rollups keep every digit); both
    # NULL: not rounded (migration 0007).
    rounding_mode: Mapped[str | None] = mapped_column(String(20))  # a core RoundingMode
    rounding_precision: Mapped[int | None]  # decimal places, 0 for whole units
    created_at: Mapped[datetime]


@event.listens_for(MeterRow, "after_insert")
@event.listens_for(MeterRow, "after_update")
def _meters_changed(_mapper: Any, connection: Connection, meter: MeterRow) -> None:
    """Raise the tenant's `meters_revision` in the transaction that writes the meter, so a
    definition cached at an older revision is never taken again (meters are never deleted)."""
    connection.execute(
        update(TenantRow)
        .where(TenantRow.id == meter.tenant_id)
        .values(meters_revision=TenantRow.meters_revision + 1)
    )


class FeatureRow(TenantScoped, Base):
    __tablename__ = "features"
    __table_args__ = (UniqueConstraint("tenant_id", "mode", "code"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(CODE)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # boolean, limit, metered
    meter_code: Mapped[str | None] = mapped_column(CODE)
    created_at: Mapped[datetime]


class PlanRow(TenantScoped, Base):
    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("tenant_id", "mode", "code"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(CODE)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class PlanVersionRow(TenantScoped, Base):
    __tablename__ = "plan_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "plan_code", "version"),
        _scoped_fk(["plan_code"], "plans", ["code"]),
        CheckConstraint("status IN ('draft', 'published', 'archived')", name="status"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    plan_code: Mapped[str] = mapped_column(CODE)
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    document: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]


class CustomerRow(TenantScoped, Base):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "external_id"),
        UniqueConstraint("tenant_id", "mode", "id"),
        _scoped_fk(["parent_customer_id"], "customers", ["id"]),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320))
    billing_address: Mapped[dict[str, Any]] = mapped_column(default=dict)
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(2))
    tax_ids: Mapped[list[Any]] = mapped_column(default=list)
    net_terms_days: Mapped[int | None]
    parent_customer_id: Mapped[str | None] = mapped_column(ID)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime]


class PriceOverrideRow(TenantScoped, Base):
    __tablename__ = "price_overrides"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "customer_id", "plan_code", "charge_code"),
        _scoped_fk(["customer_id"], "customers", ["id"]),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ID)
    plan_code: Mapped[str] = mapped_column(CODE)
    charge_code: Mapped[str] = mapped_column(CODE)
    price: Mapped[dict[str, Any]]  # a price document: amounts as decimal strings
    created_at: Mapped[datetime]


class CouponRow(TenantScoped, Base):
    __tablename__ = "coupons"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "code"),
        CheckConstraint("(percent_off IS NULL) <> (amount_off_minor IS NULL)", name="one_discount"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(CODE)
    name: Mapped[str] = mapped_column(String(200))
    percent_off: Mapped[Decimal | None]
    amount_off_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    duration: Mapped[str] = mapped_column(String(20))  # once, repeating, forever
    duration_periods: Mapped[int | None]
    max_redemptions: Mapped[int | None]
    redeem_by: Mapped[datetime | None]
    created_at: Mapped[datetime]


# --- subscriptions ---------------------------------------------------------------------------


class SubscriptionRow(TenantScoped, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "id"),
        Index(None, "tenant_id", "mode", "customer_id"),
        Index(None, "tenant_id", "mode", "status", "current_period_end_at"),
        _scoped_fk(["customer_id"], "customers", ["id"]),
        _scoped_fk(["plan_code", "plan_version"], "plan_versions", ["plan_code", "version"]),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ID)
    plan_code: Mapped[str] = mapped_column(CODE)
    plan_version: Mapped[int]
    quantity: Mapped[Decimal]
    status: Mapped[str] = mapped_column(String(20))
    anchor_at: Mapped[datetime]
    timezone: Mapped[str] = mapped_column(String(64))
    current_period_start_at: Mapped[datetime]
    current_period_end_at: Mapped[datetime]
    trial_ends_at: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    canceled_at: Mapped[datetime | None]
    pending_change: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


class SubscriptionChangeRow(TenantScoped, Base):
    """The timeline: one timestamped command per row, never edited."""

    __tablename__ = "subscription_changes"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "subscription_id", "seq"),
        _scoped_fk(["subscription_id"], "subscriptions", ["id"]),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ID)
    seq: Mapped[int]
    command: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]]
    effective_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))


# --- metering --------------------------------------------------------------------------------

SEQ = BigInteger().with_variant(Integer, "sqlite")  # SQLite: the rowid itself


# An event's id within its scope, as one text (`chr(31)` cannot occur in any of the three: ids
# are printable). PostgreSQL's dedup constraint is on it: a hash index takes one word an entry
# where a b-tree on the three columns took ~80 bytes, and random ids dirty that many fewer pages.
def event_scoped_id(table: str = "") -> str:
    """`EVENT_SCOPED_ID`, its columns qualified with ``table.`` when given."""
    at = f"{table}." if table else ""
    return f"({at}tenant_id || chr(31) || {at}mode || chr(31) || {at}event_id)"


EVENT_SCOPED_ID = event_scoped_id()


class EventRow(TenantScoped, Base):
    """A raw usage event, kept as received (event sourcing); unique per (tenant, mode, id).

    ``customer_id`` is NULL while the event is held (unknown customer or meter, per policy);
    ``seq`` is the arrival order, which breaks ties between events at the same instant.
    """

    __tablename__ = "events"
    __table_args__ = (
        # SQLite only: on PostgreSQL a foreign key costs a trigger and a query of `tenants`
        # per stored event, and tenants are never deleted (migration 0014).
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"]).ddl_if(dialect="sqlite"),
        # Dedup: PostgreSQL merges against an exclusion constraint on a hash index of the
        # scoped id (migration 0012); SQLite checks under its write lock through a compact
        # hash of the id (`event_ids.id_hash`), kept in `EVENT_IDS` and `RECENT_EVENT_IDS`
        # (migrations 0005, 0013).
        ExcludeConstraint(
            (text(EVENT_SCOPED_ID), "="), name="ex_events_scoped_id", using="hash"
        ).ddl_if(dialect="postgresql"),
        # Reads of a customer's events of one meter in a time range; keyed on the hour, so that
        # within it entries follow arrival and live traffic appends (migration 0008).
        Index(None, "tenant_id", "mode", "customer_id", "meter_code", "occurred_hour"),
        # The event log's pages, the latest first (migration 0011). On PostgreSQL the primary
        # key is on these columns instead of `seq` alone, one index fewer (migration 0018);
        # SQLite's `seq` is its rowid, which costs no index.
        Index(None, "tenant_id", "mode", "seq").ddl_if(dialect="sqlite"),
    )

    tenant_id: Mapped[str] = mapped_column(ID, sort_order=-10)  # the key: `__table_args__`
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(255))
    id_hash: Mapped[int | None] = mapped_column(BigInteger)  # SQLite only: see `event_store`
    meter_code: Mapped[str] = mapped_column(CODE)
    customer_ref: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(ID)
    occurred_at: Mapped[datetime]
    occurred_hour: Mapped[int] = mapped_column(Integer)  # `event_store.hour_number(occurred_at)`
    received_at: Mapped[datetime]
    # A held event counts from its release, not its receipt: an invoice closed in between did
    # not bill it, so it is late usage (an adjustment) then. NULL: counted since received_at.
    counted_at: Mapped[datetime | None]
    properties: Mapped[dict[str, Any]]


def _id_tier(name: str) -> Table:
    return Table(
        name,
        Base.metadata,
        Column("id_hash", BigInteger, primary_key=True),
        Column("seq", BigInteger, primary_key=True),
        sqlite_with_rowid=False,
    )


# SQLite's dedup key, in two tiers (`event_store`, migration 0013): each stored event's
# `id_hash` with its `seq`, first in the small table of recent ids, which takes them in random
# order, then moved into the large one a slice of the hash range at a time, in key order.
# PostgreSQL leaves both empty (its dedup is the exclusion constraint on `events`).
EVENT_IDS = _id_tier("event_ids")
RECENT_EVENT_IDS = _id_tier("event_ids_recent")


ROLLUP_KEY = ("tenant_id", "mode", "customer_id", "meter_code", "hour_at", "group_key")
DAILY_KEY = ("tenant_id", "mode", "customer_id", "meter_code", "day_at", "group_key")
ROLLUP_VALUES = (
    "event_count",
    "value_count",
    "value_sum",
    "value_min",
    "value_max",
    "latest_value",
    "latest_at",
    "latest_seq",
)


class RollupValues:
    """Mixin: the merged partial a rollup row holds (`core.rollups.Partial`, `ROLLUP_VALUES`)."""

    event_count: Mapped[int] = mapped_column(BigInteger)
    value_count: Mapped[int] = mapped_column(BigInteger)
    value_sum: Mapped[Decimal]
    value_min: Mapped[Decimal | None]
    value_max: Mapped[Decimal | None]
    latest_value: Mapped[Decimal | None]
    latest_at: Mapped[datetime | None]
    latest_seq: Mapped[int] = mapped_column(BigInteger)


class UsageRollupRow(TenantScoped, RollupValues, Base):
    """The merged aggregate of one hour of one (customer, meter, group); partials merge exactly.

    One row per key: ingestion merges each commit's partials into it (`rollup_store.add_rollups`).
    On SQLite the table is ``WITHOUT ROWID``, clustered on the key, so a usage query reads one
    customer's hours from contiguous pages (migration 0006).
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (
        # PostgreSQL keeps rows in a heap: the key's index carries the values too, so a usage
        # query reads one customer's hours from the index alone instead of a heap page per
        # hour (0009), and a merged row updates one index (0015).
        PrimaryKeyConstraint(*ROLLUP_KEY, postgresql_include=list(ROLLUP_VALUES)),
        {"sqlite_with_rowid": False},
    )

    customer_id: Mapped[str] = mapped_column(ID)
    meter_code: Mapped[str] = mapped_column(CODE)
    hour_at: Mapped[datetime]
    group_key: Mapped[str] = mapped_column(String(1000))  # JSON array of the group values


class DailyRollupRow(TenantScoped, RollupValues, Base):
    """The merge of one sealed UTC day's hourly rollups of one (customer, meter, group).

    A usage query reads a row a day for the whole days it covers instead of 24 (`usage_reads.
    read_usage`). Days before `RollupSealRow.sealed_before` have them: `rollup_seal.
    seal_rollups` makes a day's once it is over, and every later write to an hour of a sealed
    day (a late event, a rebuild) merges into its day's row in the same transaction
    (`rollup_store.add_rollups`). The hourly rows stay: hourly series and partial days read them.
    """

    __tablename__ = "usage_rollups_daily"
    __table_args__ = (
        PrimaryKeyConstraint(*DAILY_KEY, postgresql_include=list(ROLLUP_VALUES)),
        {"sqlite_with_rowid": False},
    )

    customer_id: Mapped[str] = mapped_column(ID)
    meter_code: Mapped[str] = mapped_column(CODE)
    day_at: Mapped[datetime]
    group_key: Mapped[str] = mapped_column(String(1000))


class RollupSealRow(Base):
    """The one row (id 1) saying up to which instant the daily rollups are complete."""

    __tablename__ = "rollup_seal"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    sealed_before: Mapped[datetime | None]  # a UTC midnight; None: no day sealed yet


class MeteringPolicyRow(TenantScoped, Base):
    """A tenant's ingestion rules (one row per tenant and mode; defaults when absent)."""

    __tablename__ = "metering_policies"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode"),
        CheckConstraint("unknown_customer IN ('reject', 'hold')", name="unknown_customer"),
        CheckConstraint("unknown_meter IN ('reject', 'hold')", name="unknown_meter"),
        CheckConstraint("late_events IN ('adjust', 'reject')", name="late_events"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    unknown_customer: Mapped[str] = mapped_column(String(10))
    unknown_meter: Mapped[str] = mapped_column(String(10))
    late_events: Mapped[str] = mapped_column(String(10))
    max_past_seconds: Mapped[int] = mapped_column(BigInteger)
    max_future_seconds: Mapped[int] = mapped_column(BigInteger)
    retention_days: Mapped[int | None]  # None: raw events are kept until purged explicitly
    purged_before_at: Mapped[datetime | None]


class UsageClosureRow(TenantScoped, Base):
    """A customer's usage up to ``period_end_at`` was invoiced at ``closed_at``.

    An event that arrives later for such a period is late: billed as an adjustment or refused.
    """

    __tablename__ = "usage_closures"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "customer_id", "period_end_at"),
        _scoped_fk(["customer_id"], "customers", ["id"]),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ID)
    period_start_at: Mapped[datetime]
    period_end_at: Mapped[datetime]
    closed_at: Mapped[datetime]
    adjusted_at: Mapped[datetime | None]  # when late usage of the period was last billed


class UsageAlertRow(TenantScoped, Base):
    """A threshold on a customer's usage (quantity) or spend (amount) of one meter."""

    __tablename__ = "usage_alerts"
    __table_args__ = (
        Index(None, "tenant_id", "mode", "customer_id", "meter_code"),
        _scoped_fk(["customer_id"], "customers", ["id"]),
        CheckConstraint("metric IN ('usage', 'spend')", name="metric"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ID)
    meter_code: Mapped[str] = mapped_column(CODE)
    metric: Mapped[str] = mapped_column(String(10))
    threshold: Mapped[Decimal]
    created_at: Mapped[datetime]


class WebhookOutboxRow(TenantScoped, Base):
    """An outgoing webhook event, written in the transaction that caused it; sent after."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        UniqueConstraint("tenant_id", "mode", "dedup_key"),
        Index(None, "tenant_id", "mode", "delivered_at"),
    )

    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(100))
    dedup_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


APPEND_ONLY: tuple[type[Base], ...] = (AuditEntryRow, SubscriptionChangeRow)
