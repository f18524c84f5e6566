"""Catalog use cases: meters, features, coupons, and plans whose every change is a new version.

    >>> version = create_plan(uow, PlanInput.model_validate(doc), now=now)   # doctest: +SKIP
    >>> version.version, version.status
    (1, 'draft')
    >>> publish_version(uow, "pro", 1, now=now).status                      # doctest: +SKIP
    'published'

A plan version's document never changes once stored: an edit is `add_version`, and subscriptions
stay on the version they were created on until they are migrated (`services.subscriptions`).
New subscriptions take the latest *published* version; an archived version takes no new ones.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import select

from ratecard.adapters.db.models import (
    CouponRow,
    FeatureRow,
    MeterRow,
    PlanRow,
    PlanVersionRow,
    SubscriptionRow,
    UsageAlertRow,
)
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import MAX_ROUNDING_PRECISION
from ratecard.core.catalog import Plan
from ratecard.core.errors import Conflict, ErrorCode, Problem, ValidationFailed
from ratecard.core.money import CURRENCY_EXPONENTS, RoundingMode, currency
from ratecard.core.subscriptions import ACCRUING
from ratecard.services.common import Code, Input, commit_unique, exists, refuse
from ratecard.services.documents import ExactDecimal, problems_from
from ratecard.services.metering import meters, rebuild
from ratecard.services.metering.lifecycle import release_held
from ratecard.services.plan_documents import PlanDoc, load_plan, native_document

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


# --- features --------------------------------------------------------------------------------


class FeatureInput(Input):
    code: Code
    name: str = Field(default="", max_length=200)
    kind: Literal["boolean", "limit", "metered"] = "boolean"
    meter_code: Code | None = None

    @model_validator(mode="after")
    def _meter_for_metered(self) -> FeatureInput:
        if (self.kind == "metered") != (self.meter_code is not None):
            raise ValueError("meter_code is required for metered features and only for them")
        return self


def create_feature(uow: UnitOfWork, data: FeatureInput, *, now: datetime) -> FeatureRow:
    meter_code = data.meter_code
    if meter_code is not None and not exists(lambda: uow.meters.get_by_code(meter_code)):
        raise refuse(f"no meter {meter_code}", "body.meter_code")
    if exists(lambda: uow.features.get_by_code(data.code)):
        raise Conflict(f"feature {data.code} already exists", code=ErrorCode.ALREADY_EXISTS)
    row = uow.features.add(
        FeatureRow(
            code=data.code,
            name=data.name or data.code,
            kind=data.kind,
            meter_code=data.meter_code,
            created_at=now,
        )
    )
    commit_unique(uow, f"feature {data.code}")
    return row


# --- coupons ---------------------------------------------------------------------------------


class CouponInput(Input):
    code: Code
    name: str = Field(default="", max_length=200)
    percent_off: ExactDecimal | None = Field(default=None, gt=0, le=100)
    amount_off: ExactDecimal | None = Field(default=None, gt=0, le=Decimal("1e15"))
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    duration: Literal["once", "repeating", "forever"] = "once"
    duration_periods: int | None = Field(default=None, ge=1, le=120)
    max_redemptions: int | None = Field(default=None, ge=1, le=10_000_000)
    redeem_by: AwareDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CouponInput:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("give exactly one of percent_off and amount_off")
        if (self.amount_off is None) != (self.currency is None):
            raise ValueError("amount_off needs currency (and currency is only for amount_off)")
        if self.currency is not None and self.currency.upper() not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {self.currency!r}")
        if (self.duration == "repeating") != (self.duration_periods is not None):
            raise ValueError("duration_periods is required for repeating coupons and only there")
        return self


def create_coupon(uow: UnitOfWork, data: CouponInput, *, now: datetime) -> CouponRow:
    amount_off_minor = None
    cur = data.currency.upper() if data.currency else None
    if data.amount_off is not None and cur is not None:
        minor = data.amount_off.scaleb(currency(cur).exponent)
        if minor != minor.to_integral_value():
            raise refuse(f"more decimal places than {cur} has", "body.amount_off")
        amount_off_minor = int(minor)
    if exists(lambda: uow.coupons.get_by_code(data.code)):
        raise Conflict(f"coupon {data.code} already exists", code=ErrorCode.ALREADY_EXISTS)
    row = uow.coupons.add(
        CouponRow(
            code=data.code,
            name=data.name or data.code,
            percent_off=data.percent_off,
            amount_off_minor=amount_off_minor,
            currency=cur,
            duration=data.duration,
            duration_periods=data.duration_periods,
            max_redemptions=data.max_redemptions,
            redeem_by=data.redeem_by,
            created_at=now,
        )
    )
    commit_unique(uow, f"coupon {data.code}")
    return row


# --- plans -----------------------------------------------------------------------------------


class PlanInput(PlanDoc):
    """A native plan document, plus whether to publish the new version at once."""

    publish: bool = False


def document_of(data: PlanDoc) -> dict[str, Any]:
    """The stored form: JSON values, decimals as exact strings."""
    return data.model_dump(mode="json", exclude={"publish"}, exclude_defaults=True)


def plan_of(row: PlanVersionRow, document: dict[str, Any] | None = None) -> Plan:
    """The core `Plan` of a stored version (optionally of a modified copy of its document)."""
    plan = load_plan(row.document if document is None else document).plan
    return replace(plan, version=row.version)


def _validated(data: PlanInput) -> None:
    load_plan(document_of(data), "body")


def create_plan(uow: UnitOfWork, data: PlanInput, *, now: datetime) -> PlanVersionRow:
    """A new plan and its version 1."""
    _validated(data)
    if exists(lambda: uow.plans.get_by_code(data.code)):
        raise Conflict(
            f"plan {data.code} already exists; add a version instead",
            code=ErrorCode.ALREADY_EXISTS,
        )
    uow.plans.add(PlanRow(code=data.code, name=data.name or data.code, created_at=now))
    uow.session.flush()
    row = _add_version(uow, data, 1, now=now)
    commit_unique(uow, f"plan {data.code}")
    return row


def add_version(
    uow: UnitOfWork, plan_code: str, data: PlanInput, *, now: datetime
) -> PlanVersionRow:
    """Every change to a plan is a new version; stored versions are never edited."""
    plan = uow.plans.get_by_code(plan_code)
    if data.code != plan_code:
        raise refuse(f"the document is for plan {data.code}, not {plan_code}", "body.code")
    _validated(data)
    plan.name = data.name or plan.code
    row = _add_version(uow, data, uow.plan_versions.next_version_number(plan_code), now=now)
    commit_unique(uow, f"plan {plan_code} version {row.version}")
    return row


def _add_version(
    uow: UnitOfWork, data: PlanInput, version: int, *, now: datetime
) -> PlanVersionRow:
    return uow.plan_versions.add(
        PlanVersionRow(
            plan_code=data.code,
            version=version,
            status="published" if data.publish else "draft",
            currency=data.currency.upper(),
            document=document_of(data),
            created_at=now,
            published_at=now if data.publish else None,
        )
    )


def publish_version(
    uow: UnitOfWork, plan_code: str, version: int, *, now: datetime
) -> PlanVersionRow:
    row = uow.plan_versions.get_version(plan_code, version)
    if row.status == "archived":
        raise Conflict(f"plan {plan_code} v{version} is archived", code=ErrorCode.CONFLICT)
    if row.status == "draft":
        row.status = "published"
        row.published_at = now
        uow.commit()
    return row


def archive_version(uow: UnitOfWork, plan_code: str, version: int) -> PlanVersionRow:
    """Take a version off sale: no new subscriptions; existing ones keep running on it."""
    row = uow.plan_versions.get_version(plan_code, version)
    if row.status != "archived":
        row.status = "archived"
        uow.commit()
    return row


def latest_version(uow: UnitOfWork, plan_code: str) -> PlanVersionRow | None:
    versions = uow.plan_versions.versions(plan_code)
    return versions[-1] if versions else None


def sellable_version(uow: UnitOfWork, plan_code: str, version: int | None) -> PlanVersionRow:
    """The version a new subscription or a plan change may use (published), else a problem."""
    field = "body.plan_version" if version is not None else "body.plan_code"
    if version is None:
        if not exists(lambda: uow.plans.get_by_code(plan_code)):
            raise refuse(f"no plan {plan_code}", "body.plan_code")
        published = [v for v in uow.plan_versions.versions(plan_code) if v.status == "published"]
        if not published:
            raise ValidationFailed(
                [
                    Problem(
                        ErrorCode.PLAN_VERSION_NOT_PUBLISHED,
                        f"plan {plan_code} has no published version",
                        field,
                    )
                ]
            )
        return published[-1]
    if not exists(lambda: uow.plan_versions.get_version(plan_code, version)):
        raise refuse(f"no plan {plan_code} v{version}", field)
    row = uow.plan_versions.get_version(plan_code, version)
    if row.status != "published":
        raise ValidationFailed(
            [
                Problem(
                    ErrorCode.PLAN_VERSION_NOT_PUBLISHED,
                    f"plan {plan_code} v{version} is {row.status}",
                    field,
                )
            ]
        )
    return row


# --- pricing as code: ``ratecard plans apply`` -----------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanChange:
    """What applying one plan document does: create the plan, add a version, or nothing."""

    plan_code: str
    action: Literal["create", "new_version", "unchanged"]
    diff: str
    document: dict[str, Any]


def _pretty(document: dict[str, Any] | None) -> list[str]:
    if document is None:
        return []
    return json.dumps(document, indent=2, sort_keys=True, default=str).splitlines(keepends=True)


def plan_changes(uow: UnitOfWork, documents: list[Any]) -> list[PlanChange]:
    """Validate every document (all problems at once) and compare it with the latest version."""
    problems: list[Problem] = []
    parsed: list[PlanInput] = []
    for index, data in enumerate(documents):
        try:
            doc = PlanInput.model_validate(native_document(data, f"plans[{index}]"))
            load_plan(document_of(doc), f"plans[{index}]")
            parsed.append(doc)
        except ValidationError as error:
            problems.extend(problems_from(error, f"plans[{index}]"))
        except ValidationFailed as failed:
            problems.extend(failed.problems)
    codes = [doc.code for doc in parsed]
    for index, code in enumerate(codes):
        if codes.index(code) != index:
            problems.append(Problem(ErrorCode.INVALID_VALUE, f"plan {code} twice", "plans"))
    if problems:
        raise ValidationFailed(problems)
    changes = []
    for doc in parsed:
        document = document_of(doc)
        latest = latest_version(uow, doc.code)
        before = None if latest is None else latest.document
        if before == document:
            changes.append(PlanChange(doc.code, "unchanged", "", document))
            continue
        diff = "".join(
            difflib.unified_diff(
                _pretty(before),
                _pretty(document),
                f"{doc.code} v{latest.version}" if latest else "(none)",
                f"{doc.code} (new)" if latest is None else f"{doc.code} v{latest.version + 1}",
            )
        )
        action: Literal["create", "new_version"] = "create" if latest is None else "new_version"
        changes.append(PlanChange(doc.code, action, diff, document))
    return changes


def apply_plan_changes(
    uow: UnitOfWork,
    changes: list[PlanChange],
    *,
    publish: bool,
    now: datetime,
    new_meters: Sequence[MeterInput] = (),
) -> list[PlanVersionRow]:
    """Each changed plan gets a new version (or is created); nothing is edited in place.
    `new_meters` (those a template implies: `plan_meters`) are created in the same commit."""
    for meter in new_meters:
        add_meter(uow, meter, now=now)
    made = []
    for change in changes:
        if change.action == "unchanged":
            continue
        data = PlanInput.model_validate({**change.document, "publish": publish})
        _validated(data)
        if change.action == "create":
            uow.plans.add(PlanRow(code=data.code, name=data.name or data.code, created_at=now))
            uow.session.flush()
            made.append(_add_version(uow, data, 1, now=now))
        else:
            plan = uow.plans.get_by_code(data.code)
            plan.name = data.name or plan.code
            number = uow.plan_versions.next_version_number(data.code)
            made.append(_add_version(uow, data, number, now=now))
    commit_unique(
        uow,
        " or ".join(([f"meter {m.code}" for m in new_meters]) + (["plan version"] if made else [])),
    )
    if new_meters and release_held(uow):  # events sent before their meter existed
        uow.commit()
    return made
