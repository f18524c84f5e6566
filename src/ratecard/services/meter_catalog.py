"""Meter definitions as use cases: create one, or change how it aggregates (re-aggregated from
the raw events, `metering.rebuild`), each checked whole first.

    >>> data = MeterInput(code="api_calls", aggregation="count")            # doctest: +SKIP
    >>> meter = create_meter(uow, data, now=now)                             # doctest: +SKIP
    >>> update_meter(uow, meter.id, MeterUpdate(aggregation="max", value_field="ms"))
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
)
from sqlalchemy import select

from ratecard.adapters.db.models import (
    MeterRow,
    SubscriptionRow,
    UsageAlertRow,
)
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import MAX_ROUNDING_PRECISION
from ratecard.core.errors import Conflict, ErrorCode
from ratecard.core.money import RoundingMode
from ratecard.core.subscription_model import ACCRUING
from ratecard.services.common import Code, Input, commit_unique, exists
from ratecard.services.metering import meters, rebuild
from ratecard.services.metering.lifecycle import release_held

Aggregation = Literal[
    "count", "sum", "max", "min", "unique_count", "latest", "average", "weighted_sum"
]


# --- meters ----------------------------------------------------------------------------------


class RoundingInput(Input):
    """How a meter rounds its period quantity: a mode and decimal places (0: whole units)."""

    mode: RoundingMode
    precision: int = Field(strict=True, ge=0, le=MAX_ROUNDING_PRECISION)


#: The most dimensions a meter groups its usage by.
MAX_GROUP_BY = 10

#: An event property a meter reads: its value, a filter, a dimension (as events name them).
PropertyName = Annotated[str, Field(min_length=1, max_length=200)]


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each dimension at most once; repeated: {', '.join(repeated)}")
    return names


#: Group-by dimensions: property names, distinct, in the order the usage API shows them.
GroupBy = Annotated[list[PropertyName], Field(max_length=MAX_GROUP_BY), AfterValidator(_distinct)]
Filters = Annotated[dict[str, str], Field(max_length=20)]


class MeterInput(Input):
    code: Code
    name: str = Field(default="", max_length=200)
    aggregation: Aggregation = "sum"
    value_field: PropertyName | None = Field(default=None, validate_default=True)
    reset: Literal["monthly", "daily", "never"] = "monthly"
    snapshot: bool = False
    filters: Filters = Field(default_factory=dict)
    group_by: GroupBy = Field(default_factory=list)
    rounding: RoundingInput | None = None

    @field_validator("value_field")
    @classmethod
    def _value_field_needed(cls, value: str | None, info: ValidationInfo) -> str | None:
        aggregation = info.data.get("aggregation")  # absent: refused on its own
        if aggregation is not None and aggregation != "count" and not value:
            raise ValueError(f"aggregation {aggregation!r} needs value_field")
        return value


def create_meter(uow: UnitOfWork, data: MeterInput, *, now: datetime) -> MeterRow:
    row = add_meter(uow, data, now=now)
    commit_unique(uow, f"meter {data.code}")
    if release_held(uow):  # events that arrived before their meter
        uow.commit()
    return row


def add_meter(uow: UnitOfWork, data: MeterInput, *, now: datetime) -> MeterRow:
    """`create_meter` without its commit (the caller commits, then releases held events)."""
    if exists(lambda: uow.meters.get_by_code(data.code)):
        raise Conflict(f"meter {data.code} already exists", code=ErrorCode.ALREADY_EXISTS)
    row = MeterRow(
        code=data.code,
        name=data.name or data.code,
        aggregation=data.aggregation,
        value_field=data.value_field,
        reset=data.reset,
        snapshot=data.snapshot,
        filters=dict(data.filters),
        group_by=list(data.group_by),
        rounding_mode=None if data.rounding is None else str(data.rounding.mode),
        rounding_precision=None if data.rounding is None else data.rounding.precision,
        created_at=now,
    )
    meters.checked_spec(row, "body")  # the definition's one check, as a change has it
    uow.meters.add(row)
    return row


class MeterUpdate(Input):
    """The fields to change; fields left out keep their values. ``"rounding": null`` makes the
    meter exact again, ``"value_field": null`` leaves a count meter without one. A change of
    `aggregation`, `value_field`, `filters` or `group_by` re-aggregates the meter from its raw
    events (`meters.redefine`)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    aggregation: Aggregation | None = None
    value_field: PropertyName | None = None
    filters: Filters | None = None
    group_by: GroupBy | None = None
    rounding: RoundingInput | None = None

    @field_validator("name", "aggregation", "filters", "group_by", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value

    def definition(self, row: MeterRow) -> meters.Definition:
        """The meter's definition with this update's parts of it."""
        now, given = meters.Definition.of(row), self.model_fields_set
        return meters.Definition(
            self.aggregation if self.aggregation is not None else now.aggregation,
            self.value_field if "value_field" in given else now.value_field,
            dict(self.filters) if self.filters is not None else now.filters,
            tuple(self.group_by) if self.group_by is not None else now.group_by,
        )


def update_meter(uow: UnitOfWork, meter_id: str, data: MeterUpdate) -> MeterRow:
    """Rename a meter, change its rounding or its definition, and commit (audited, before and
    after). Its code never changes.

    Rounding applies when usage is read, so it rebuilds nothing. A new definition (aggregation,
    value field, filters, group-by) is checked as a whole first — a refused one changes
    nothing — then the meter's rollups are rebuilt from its raw events: read first without
    holding the meter's lock (`rebuild.prepare`), then swapped in this transaction under it
    (`meters.redefine`: the longer the history, the longer both take). Either way usage,
    drafts, entitlements and alerts read the change at once: the tenant's `meters_revision`
    rises with the row, and the entitlement cache and the alerts of customers billed on the
    meter hear that their usage changed.
    """
    row = uow.meters.get(meter_id)
    definition = data.definition(row)
    prepared = None
    if definition != meters.Definition.of(row):  # its history read first, outside the lock
        prepared = rebuild.prepare(uow, row, definition, at="body")
    try:
        return _update_meter(uow, meter_id, data, prepared)
    finally:
        if prepared is not None:
            prepared.close()


def _update_meter(
    uow: UnitOfWork, meter_id: str, data: MeterUpdate, prepared: rebuild.Prepared | None
) -> MeterRow:
    row = uow.meters.get_for_update(meter_id)
    given = data.model_fields_set
    definition = data.definition(row)
    redefined = definition != meters.Definition.of(row)
    if "name" in given and data.name is not None:
        row.name = data.name
    rounded = False
    if "rounding" in given:
        before = (row.rounding_mode, row.rounding_precision)
        rounding = data.rounding
        row.rounding_mode = None if rounding is None else str(rounding.mode)
        row.rounding_precision = None if rounding is None else rounding.precision
        rounded = (row.rounding_mode, row.rounding_precision) != before
    if redefined:
        # Checked whole before its first flush: a refusal leaves the row unwritten, and the
        # request's unit of work rolls back. One flush then writes (and audits) every change.
        meters.redefine(uow, row, definition, at="body", prepared=prepared)
    if redefined or rounded:
        uow.usage_changed((customer_id, row.code) for customer_id in _metered(uow, row.code))
    uow.commit()
    return row


def _metered(uow: UnitOfWork, meter_code: str) -> set[str]:
    """Customers whose cached entitlements or alerts may read the meter: those with a live
    subscription, and those with an alert on it."""
    scope = uow.scope
    live = select(SubscriptionRow.customer_id).where(
        SubscriptionRow.tenant_id == scope.tenant_id,
        SubscriptionRow.mode == scope.mode,
        SubscriptionRow.status.in_(ACCRUING),
    )
    alerted = select(UsageAlertRow.customer_id).where(
        UsageAlertRow.tenant_id == scope.tenant_id,
        UsageAlertRow.mode == scope.mode,
        UsageAlertRow.meter_code == meter_code,
    )
    return {str(c) for c in uow.session.scalars(live)} | {
        str(c) for c in uow.session.scalars(alerted)
    }
