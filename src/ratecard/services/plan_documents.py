"""Plans as documents: validate a JSON/YAML plan and turn it into core catalog values.

A native plan document::

    code: pro
    name: Pro
    currency: USD
    interval: month              # day | week | month | quarter | year, or {unit: month, count: 6}
    trial_days: 14
    charges:
      - code: seats
        model: per_unit
        source: seats
        unit_price: "12.00"
      - code: api_calls
        model: graduated
        meter: api_calls          # quantity from a meter: bills in arrears by default
        tiers:
          - {up_to: 10000, unit_price: "0"}
          - {up_to: null, unit_price: "0.002"}
    entitlements:
      - {feature: sso, type: boolean}
      - {feature: api_calls, type: metered, limit: 1000000, on_exceed: throttle_and_notify}
    commitments:
      - {minimum_amount: "500.00"}

The configuration template of the original brief (`planId`, `features[].rating`, `entitlement`,
`commitments`) is accepted as written and mapped onto the same model (`from_template`).

Every problem is reported at once, each naming the path of the field at fault; a document with
problems raises `ValidationFailed` and produces nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ratecard.core.catalog import (
    BillingTiming,
    Charge,
    ChargeModel,
    Commitment,
    Entitlement,
    EntitlementKind,
    ExceedAction,
    Plan,
    PriceSpec,
    QuantityRounding,
    QuantitySource,
    Tier,
    Transform,
)
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.periods import Interval, IntervalUnit
from ratecard.core.pricing import validate_price
from ratecard.services.documents import CurrencyCode, ExactDecimal, problems_from

Code = str


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierDoc(_Doc):
    up_to: ExactDecimal | None
    unit_price: ExactDecimal = Decimal(0)
    flat_fee: ExactDecimal = Decimal(0)
    rate: ExactDecimal = Decimal(0)


class TransformDoc(_Doc):
    divide_by: ExactDecimal = Field(gt=0)
    round: QuantityRounding = QuantityRounding.UP


class ChargeDoc(_Doc):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    model: ChargeModel
    source: QuantitySource | None = None
    meter: str | None = None
    quantity: ExactDecimal | None = None
    timing: BillingTiming | None = None
    prorate: bool = True
    amount: ExactDecimal | None = None
    unit_price: ExactDecimal | None = None
    tiers: list[TierDoc] = Field(default_factory=list, max_length=100)
    package_size: ExactDecimal | None = None
    package_rounding: QuantityRounding = QuantityRounding.UP
    rate: ExactDecimal | None = None
    fixed_fee_per_event: ExactDecimal | None = None
    min_per_event: ExactDecimal | None = None
    max_per_event: ExactDecimal | None = None
    free_units: ExactDecimal = Field(default=Decimal(0), ge=0)
    free_events: int = Field(default=0, ge=0)
    free_amount: ExactDecimal = Field(default=Decimal(0), ge=0)
    transform: TransformDoc | None = None
    minimum: ExactDecimal | None = Field(default=None, ge=0)
    maximum: ExactDecimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _source_matches_meter(self) -> ChargeDoc:
        if self.source is QuantitySource.METER and not self.meter:
            raise ValueError("a charge with source 'meter' needs 'meter'")
        if self.meter and self.source not in (None, QuantitySource.METER):
            raise ValueError(f"'meter' is only allowed with source 'meter', not {self.source}")
        return self


class EntitlementDoc(_Doc):
    feature: str = Field(min_length=1, max_length=64)
    type: EntitlementKind
    enabled: bool = True
    limit: ExactDecimal | None = Field(default=None, ge=0)
    meter: str | None = None
    on_exceed: ExceedAction = ExceedAction.DENY
    fail_open: bool = True


class CommitmentDoc(_Doc):
    minimum_amount: ExactDecimal = Field(ge=0)
    prorate: bool = True


IntervalName = Literal["day", "week", "month", "quarter", "year"]


class IntervalDoc(_Doc):
    unit: IntervalUnit
    count: int = Field(default=1, ge=1, le=36)


class PlanDoc(_Doc):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    currency: CurrencyCode
    interval: IntervalName | IntervalDoc = "month"
    trial_days: int = Field(default=0, ge=0, le=730)
    charges: list[ChargeDoc] = Field(min_length=1, max_length=100)
    entitlements: list[EntitlementDoc] = Field(default_factory=list)
    commitments: list[CommitmentDoc] = Field(default_factory=list, max_length=1)
    metadata: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImpliedMeter:
    """A meter a template plan implies (the template has no separate meter list)."""

    code: str
    aggregation: str
    value_property: str | None
    reset: str = "period"  # "never" for snapshots (gauges) that carry over


@dataclass(frozen=True, slots=True)
class LoadedPlan:
    plan: Plan
    meters: tuple[ImpliedMeter, ...] = ()


def load_plan(data: Any, path: str = "") -> LoadedPlan:
    """Validate a plan document (native or template shape) and build the plan, or raise."""
    if isinstance(data, dict) and "planId" in data:
        return from_template(data, path)
    try:
        doc = PlanDoc.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(exc, path)
        raise ValidationFailed(problems + _charge_problems(data, path, problems)) from None
    return LoadedPlan(build_plan(doc, path))


def _charge_problems(data: Any, path: str, found: list[Problem]) -> list[Problem]:
    """Price checks of the charges that are well formed, when others in the plan are not."""
    raw = data.get("charges") if isinstance(data, dict) else None
    problems: list[Problem] = []
    prefix = f"{path}." if path else ""
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        where = f"{prefix}charges[{i}]"
        if any(p.field and p.field.startswith(where) for p in found):
            continue
        try:
            built = _charge(ChargeDoc.model_validate(item))
        except ValidationError:
            continue
        problems.extend(validate_price(built.model, built.price, where))
    return problems


def _interval(value: IntervalName | IntervalDoc) -> Interval:
    if isinstance(value, IntervalDoc):
        return Interval(value.unit, value.count)
    return Interval(IntervalUnit(value), 1)


def _charge(doc: ChargeDoc) -> Charge:
    source = doc.source or (QuantitySource.METER if doc.meter else QuantitySource.FIXED)
    metered = source is QuantitySource.METER
    timing = doc.timing or (BillingTiming.IN_ARREARS if metered else BillingTiming.IN_ADVANCE)
    price = PriceSpec(
        amount=doc.amount,
        unit_price=doc.unit_price,
        tiers=tuple(Tier(t.up_to, t.unit_price, t.flat_fee, t.rate) for t in doc.tiers),
        package_size=doc.package_size,
        package_rounding=doc.package_rounding,
        rate=doc.rate,
        fixed_fee_per_event=doc.fixed_fee_per_event,
        min_per_event=doc.min_per_event,
        max_per_event=doc.max_per_event,
        free_units=doc.free_units,
        free_events=doc.free_events,
        free_amount=doc.free_amount,
        transform=Transform(doc.transform.divide_by, doc.transform.round)
        if doc.transform
        else None,
        minimum_amount=doc.minimum,
        maximum_amount=doc.maximum,
    )
    return Charge(
        code=doc.code,
        name=doc.name or doc.code,
        model=doc.model,
        price=price,
        source=source,
        meter_code=doc.meter if metered else None,
        fixed_quantity=doc.quantity if doc.quantity is not None else Decimal(1),
        timing=timing,
        prorate=doc.prorate,
    )


def build_plan(doc: PlanDoc, path: str = "") -> Plan:
    """Semantic checks that need the whole document, then the frozen Plan."""
    prefix = f"{path}." if path else ""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, charge in enumerate(doc.charges):
        where = f"{prefix}charges[{i}]"
        if charge.code in seen:
            problems.append(
                Problem(ErrorCode.INVALID_VALUE, f"duplicate charge code {charge.code!r}", where)
            )
        seen.add(charge.code)
        built = _charge(charge)
        problems.extend(validate_price(built.model, built.price, where))
    features = [e.feature for e in doc.entitlements]
    for i, feature in enumerate(features):
        if features.index(feature) != i:
            problems.append(
                Problem(
                    ErrorCode.INVALID_VALUE,
                    f"duplicate feature {feature!r}",
                    f"{prefix}entitlements[{i}].feature",
                )
            )
    if problems:
        raise ValidationFailed(problems)
    return Plan(
        code=doc.code,
        name=doc.name or doc.code,
        currency=doc.currency.upper(),
        interval=_interval(doc.interval),
        trial_days=doc.trial_days,
        charges=tuple(_charge(c) for c in doc.charges),
        entitlements=tuple(
            Entitlement(
                feature=e.feature,
                kind=e.type,
                enabled=e.enabled,
                limit=e.limit,
                meter_code=e.meter,
                on_exceed=e.on_exceed,
                fail_open=e.fail_open,
            )
            for e in doc.entitlements
        ),
        commitments=tuple(Commitment(c.minimum_amount, c.prorate) for c in doc.commitments),
        metadata=tuple(sorted(doc.metadata.items())),
    )


# --- the original brief's configuration template ---------------------------------------------


class TemplateTier(_Doc):
    upTo: ExactDecimal | None
    rate: ExactDecimal


class TemplateRating(_Doc):
    model: Literal["per_unit", "volume", "tiered", "graduated", "package", "flat"]
    rate: ExactDecimal | None = None
    tiers: list[TemplateTier] = Field(default_factory=list)


class TemplateEntitlement(_Doc):
    type: Literal["hard_limit", "soft_limit", "boolean"]
    limit: ExactDecimal | None = None
    actionOnExceed: str | None = None


class TemplateFeature(_Doc):
    key: str = Field(min_length=1, max_length=64)
    meteringType: Literal["aggregated", "snapshot"] = "aggregated"
    rating: TemplateRating
    entitlement: TemplateEntitlement | None = None


class TemplateCommitment(_Doc):
    type: Literal["minimum_spend"]
    amount: ExactDecimal = Field(ge=0)
    period: Literal["monthly", "quarterly", "annual", "yearly"] = "monthly"


class TemplatePlan(_Doc):
    planId: str = Field(min_length=1, max_length=64)
    currency: str
    name: str = ""
    features: list[TemplateFeature] = Field(min_length=1)
    commitments: list[TemplateCommitment] = Field(default_factory=list, max_length=1)


_TEMPLATE_PERIODS = {"monthly": "month", "quarterly": "quarter", "annual": "year", "yearly": "year"}
_TEMPLATE_EXCEED = {
    "throttle_and_notify": ExceedAction.THROTTLE_AND_NOTIFY,
    "notify": ExceedAction.ALLOW_AND_NOTIFY,
    "allow_and_notify": ExceedAction.ALLOW_AND_NOTIFY,
    "deny": ExceedAction.DENY,
    "block": ExceedAction.DENY,
}


def _template_charge(feature: TemplateFeature) -> dict[str, Any]:
    rating = feature.rating
    charge: dict[str, Any] = {"code": feature.key, "meter": feature.key}
    if rating.model == "per_unit":
        charge |= {"model": "per_unit", "unit_price": rating.rate}
    elif rating.model == "flat":
        charge |= {"model": "flat", "amount": rating.rate, "source": "fixed", "meter": None}
    else:
        model = "graduated" if rating.model == "tiered" else rating.model
        tiers = [{"up_to": t.upTo, "unit_price": t.rate} for t in rating.tiers]
        charge |= {"model": model, "tiers": tiers}
    return charge


def from_template(data: Any, path: str = "") -> LoadedPlan:
    """Map the brief's template (`planId`, `features[].rating`, ...) onto a native plan."""
    tpl, native = _template(data, path)
    try:
        doc = PlanDoc.model_validate(native)
    except ValidationError as exc:  # pragma: no cover - the mapping above is total
        raise ValidationFailed(problems_from(exc, path)) from None
    meters = tuple(
        ImpliedMeter(
            code=f.key,
            aggregation="latest" if f.meteringType == "snapshot" else "sum",
            value_property="value",
            reset="never" if f.meteringType == "snapshot" else "period",
        )
        for f in tpl.features
        # a flat fee counts nothing, unless its feature has a limit to count against
        if f.rating.model != "flat" or (f.entitlement and f.entitlement.type != "boolean")
    )
    return LoadedPlan(build_plan(doc, path), meters)


def native_document(data: Any, path: str = "") -> Any:
    """A plan document in the native shape: a template is mapped, anything else is kept."""
    if isinstance(data, dict) and "planId" in data:
        return _template(data, path)[1]
    return data


def _template(data: Any, path: str) -> tuple[TemplatePlan, dict[str, Any]]:
    try:
        tpl = TemplatePlan.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(problems_from(exc, path)) from None
    period = tpl.commitments[0].period if tpl.commitments else "monthly"
    entitlements = []
    for feature in tpl.features:
        ent = feature.entitlement
        if ent is None:
            continue
        kind = "boolean" if ent.type == "boolean" else "metered"
        action = _TEMPLATE_EXCEED.get(ent.actionOnExceed or "")
        if action is None:
            action = (
                ExceedAction.DENY if ent.type == "hard_limit" else ExceedAction.ALLOW_AND_NOTIFY
            )
        entitlements.append(
            {
                "feature": feature.key,
                "type": kind,
                "limit": ent.limit,
                "meter": feature.key if kind == "metered" else None,
                "on_exceed": action,
            }
        )
    native = {
        "code": tpl.planId,
        "name": tpl.name or tpl.planId,
        "currency": tpl.currency,
        "interval": _TEMPLATE_PERIODS[period],
        "charges": [_template_charge(f) for f in tpl.features],
        "entitlements": entitlements,
        "commitments": [{"minimum_amount": c.amount} for c in tpl.commitments],
    }
    return tpl, native
