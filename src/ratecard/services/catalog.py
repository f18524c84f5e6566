"""Catalog use cases: features, coupons, and plans whose every change is a new version (meters:
`meter_catalog`; plan documents applied as code: `plans_as_code`).

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

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    Field,
    model_validator,
)

from ratecard.adapters.db.models import (
    CouponRow,
    FeatureRow,
    PlanRow,
    PlanVersionRow,
)
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.catalog import Plan
from ratecard.core.errors import Conflict, ErrorCode, Problem, ValidationFailed
from ratecard.core.money import CURRENCY_EXPONENTS, currency
from ratecard.services.common import Code, Input, commit_unique, exists, refuse
from ratecard.services.documents import ExactDecimal
from ratecard.services.plan_documents import PlanDoc, load_plan

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


def check_plan(data: PlanInput) -> None:
    load_plan(document_of(data), "body")


def create_plan(uow: UnitOfWork, data: PlanInput, *, now: datetime) -> PlanVersionRow:
    """A new plan and its version 1."""
    check_plan(data)
    if exists(lambda: uow.plans.get_by_code(data.code)):
        raise Conflict(
            f"plan {data.code} already exists; add a version instead",
            code=ErrorCode.ALREADY_EXISTS,
        )
    uow.plans.add(PlanRow(code=data.code, name=data.name or data.code, created_at=now))
    uow.session.flush()
    row = new_version(uow, data, 1, now=now)
    commit_unique(uow, f"plan {data.code}")
    return row


def add_version(
    uow: UnitOfWork, plan_code: str, data: PlanInput, *, now: datetime
) -> PlanVersionRow:
    """Every change to a plan is a new version; stored versions are never edited."""
    plan = uow.plans.get_by_code(plan_code)
    if data.code != plan_code:
        raise refuse(f"the document is for plan {data.code}, not {plan_code}", "body.code")
    check_plan(data)
    plan.name = data.name or plan.code
    row = new_version(uow, data, uow.plan_versions.next_version_number(plan_code), now=now)
    commit_unique(uow, f"plan {plan_code} version {row.version}")
    return row


def new_version(uow: UnitOfWork, data: PlanInput, version: int, *, now: datetime) -> PlanVersionRow:
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
