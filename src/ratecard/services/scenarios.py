"""The scenario document that `ratecard simulate` runs (see docs/scenarios.md).

A scenario holds everything a billing run needs — the tenant's conventions, meters, plans, a
customer, coupons, one or more subscriptions with their timelines of changes, usage events and an
end time — and nothing else. It is validated as a whole; every problem is reported at once with
the path of the field at fault (`subscriptions[0].changes[2].plan`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ratecard.core.aggregation import MAX_ROUNDING_PRECISION
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.money import RoundingMode
from ratecard.services.documents import CurrencyCode, ExactDecimal, TimeZoneName, problems_from

ProrationName = Literal["day", "second", "monthly"]
ProrationBehavior = Literal["invoice_now", "next_invoice", "none"]
OrderStep = Literal["coupons", "tax", "credit_notes", "prepaid"]
Aggregation = Literal[
    "count", "sum", "max", "min", "unique_count", "latest", "average", "weighted_sum"
]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantConventions(_Doc):
    rounding: RoundingMode = RoundingMode.HALF_UP
    proration: ProrationName = "day"
    proration_behavior: ProrationBehavior = "invoice_now"
    credit_on_cancel: bool = True
    tax_rounding: Literal["line", "invoice"] = "line"
    order: tuple[OrderStep, ...] = ("coupons", "tax", "credit_notes", "prepaid")
    invoice_prefix: str = Field(default="INV", min_length=1, max_length=16)
    country: str | None = Field(default=None, min_length=2, max_length=2)
    net_terms_days: int = Field(default=30, ge=0, le=365)

    @model_validator(mode="after")
    def _order_is_permutation(self) -> TenantConventions:
        if sorted(self.order) != sorted(("coupons", "tax", "credit_notes", "prepaid")):
            raise ValueError("order must name coupons, tax, credit_notes and prepaid once each")
        return self


class MeterRoundingDoc(_Doc):
    """The period quantity rounded to `precision` decimal places with `mode`, before pricing."""

    mode: RoundingMode
    precision: int = Field(strict=True, ge=0, le=MAX_ROUNDING_PRECISION)


class MeterDoc(_Doc):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    aggregation: Aggregation = "sum"
    property: str | None = None
    group_by: tuple[str, ...] = ()
    filters: dict[str, str] = Field(default_factory=dict)
    reset: Literal["period", "never"] = "period"  # never: a cumulative meter or a gauge
    rounding: MeterRoundingDoc | None = None

    @model_validator(mode="after")
    def _property_needed(self) -> MeterDoc:
        if self.aggregation != "count" and not self.property:
            raise ValueError(f"aggregation {self.aggregation!r} needs 'property'")
        return self


class TaxDoc(_Doc):
    rate_percent: ExactDecimal | None = Field(default=None, ge=0, le=100)
    inclusive: bool = False
    tax_id: str | None = None
    exempt: bool = False


class CustomerDoc(_Doc):
    id: str = Field(default="cus_1", min_length=1, max_length=64)
    name: str = ""
    currency: CurrencyCode = "USD"
    timezone: TimeZoneName = "UTC"
    country: str | None = Field(default=None, min_length=2, max_length=2)
    tax: TaxDoc = TaxDoc()
    prepaid_credits: ExactDecimal = Field(default=Decimal(0), ge=0)
    credit_note_balance: ExactDecimal = Field(default=Decimal(0), ge=0)


class CouponDoc(_Doc):
    code: str = Field(min_length=1, max_length=64)
    percent_off: ExactDecimal | None = Field(default=None, gt=0, le=100)
    amount_off: ExactDecimal | None = Field(default=None, gt=0)
    duration: Literal["once", "repeating", "forever"] = "once"
    duration_periods: int | None = Field(default=None, ge=1, le=120)

    @model_validator(mode="after")
    def _one_kind(self) -> CouponDoc:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("give exactly one of percent_off and amount_off")
        if (self.duration == "repeating") != (self.duration_periods is not None):
            raise ValueError("duration_periods goes with duration 'repeating', and only with it")
        return self


ChangeAction = Literal[
    "change_plan",
    "change_quantity",
    "pause",
    "resume",
    "cancel",
    "reactivate",
    "apply_coupon",
]


class ChangeDoc(_Doc):
    at: AwareDatetime
    action: ChangeAction
    plan: str | None = None
    quantity: int | None = Field(default=None, ge=0, le=1_000_000_000)
    when: Literal["now", "period_end"] = "now"
    coupon: str | None = None

    @model_validator(mode="after")
    def _fields_for_action(self) -> ChangeDoc:
        if self.action == "change_plan" and not self.plan:
            raise ValueError("change_plan needs 'plan'")
        if self.action == "change_quantity" and self.quantity is None:
            raise ValueError("change_quantity needs 'quantity'")
        if self.action == "apply_coupon" and not self.coupon:
            raise ValueError("apply_coupon needs 'coupon'")
        return self


class ContractDoc(_Doc):
    minimum_term_end: AwareDatetime
    auto_renew: bool = True


class SubscriptionDoc(_Doc):
    id: str = Field(default="sub_1", min_length=1, max_length=64)
    plan: str
    start: AwareDatetime
    quantity: int = Field(default=1, ge=0, le=1_000_000_000)
    billing: Literal["anniversary", "calendar"] = "anniversary"
    trial_days: int | None = Field(default=None, ge=0, le=730)
    coupons: tuple[str, ...] = ()
    changes: tuple[ChangeDoc, ...] = ()
    billing_anchor: AwareDatetime | None = None  # e.g. a billing day of the month
    contract: ContractDoc | None = None


class EventDoc(_Doc):
    id: str | None = Field(default=None, max_length=128)
    meter: str
    timestamp: AwareDatetime
    value: ExactDecimal | None = None
    subscription: str | None = None
    properties: dict[str, str | ExactDecimal] = Field(default_factory=dict)


class ScenarioDoc(_Doc):
    name: str = ""
    tenant: TenantConventions = TenantConventions()
    meters: tuple[MeterDoc, ...] = ()
    plans: tuple[dict[str, Any], ...] = Field(min_length=1)
    customer: CustomerDoc = CustomerDoc()
    coupons: tuple[CouponDoc, ...] = ()
    subscriptions: tuple[SubscriptionDoc, ...] = Field(max_length=100_000)
    events: tuple[EventDoc, ...] = ()
    end: AwareDatetime

    @model_validator(mode="before")
    @classmethod
    def _single_subscription(cls, data: Any) -> Any:
        if isinstance(data, dict) and "subscription" in data:
            data = dict(data)
            if "subscriptions" in data:
                raise ValueError("give either 'subscription' or 'subscriptions', not both")
            data["subscriptions"] = [data.pop("subscription")]
        return data


def parse_scenario(data: Any) -> ScenarioDoc:
    """Validate the document's shape; cross references are checked by the simulator."""
    try:
        return ScenarioDoc.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(problems_from(exc)) from None


def reference_problems(doc: ScenarioDoc, plan_codes: set[str]) -> list[Problem]:
    """Names that must refer to something the scenario defines."""
    problems: list[Problem] = []
    if not doc.subscriptions:
        problems.append(
            Problem(
                ErrorCode.MISSING_FIELD, "give a subscription (or subscriptions)", "subscription"
            )
        )
    meters = {m.code for m in doc.meters}
    coupons = {c.code for c in doc.coupons}
    subs = {s.id for s in doc.subscriptions}

    def unknown(what: str, name: str, path: str) -> None:
        problems.append(Problem(ErrorCode.INVALID_VALUE, f"unknown {what} {name!r}", path))

    for i, sub in enumerate(doc.subscriptions):
        if sub.plan not in plan_codes:
            unknown("plan", sub.plan, f"subscriptions[{i}].plan")
        for j, code in enumerate(sub.coupons):
            if code not in coupons:
                unknown("coupon", code, f"subscriptions[{i}].coupons[{j}]")
        for j, change in enumerate(sub.changes):
            if change.plan is not None and change.plan not in plan_codes:
                unknown("plan", change.plan, f"subscriptions[{i}].changes[{j}].plan")
            if change.coupon is not None and change.coupon not in coupons:
                unknown("coupon", change.coupon, f"subscriptions[{i}].changes[{j}].coupon")
            if change.at < sub.start:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_VALUE,
                        "a change cannot come before the subscription starts",
                        f"subscriptions[{i}].changes[{j}].at",
                    )
                )
        if sub.start >= doc.end:
            problems.append(
                Problem(
                    ErrorCode.INVALID_VALUE,
                    "start must be before 'end'",
                    f"subscriptions[{i}].start",
                )
            )
    for i, event in enumerate(doc.events):
        if event.meter not in meters:
            unknown("meter", event.meter, f"events[{i}].meter")
        if event.subscription is not None and event.subscription not in subs:
            unknown("subscription", event.subscription, f"events[{i}].subscription")
    return problems


def as_utc(at: datetime) -> datetime:
    from datetime import UTC

    return at.astimezone(UTC)
