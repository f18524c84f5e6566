"""`ratecard simulate`: a scenario through the real engine, on a throwaway in-memory setup.

The steps are the production ones — plan documents are validated by `plan_documents`, each
subscription's timeline is replayed and rated by `services.rating` (the function billing runs
and the API's preview calls), usage is aggregated by `core.aggregation`, and drafts become
invoices by `core.finalize` — only the store is a list in memory and the clock is the scenario's.

Usage attribution: an event that names a subscription counts for it; one that does not counts
for the first subscription (in document order) whose plans meter it. Events with the same id
are counted once: the first in time order (ingestion takes the first one it admits; a scenario
has no admission to fail).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ratecard.core.aggregation import (
    Aggregation,
    Event,
    MeterReset,
    MeterRounding,
    MeterSpec,
    PropertyFilter,
    aggregate,
)
from ratecard.core.billing import BillingConventions, Draft, PlanBook, ProrationBehavior
from ratecard.core.catalog import Plan
from ratecard.core.discounts import AppliedCoupon, Coupon, CouponDuration, CouponKind, WaterfallStep
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.finalize import Account, CouponGrant, TotalsPolicy, finalize_drafts
from ratecard.core.invoicing import Invoice
from ratecard.core.money import Money, currency
from ratecard.core.periods import Period
from ratecard.core.pricing import Usage
from ratecard.core.proration import ProrationMethod, ProrationPolicy
from ratecard.core.subscription_model import Effective, PlanRef
from ratecard.core.tax import TaxRate, TaxRounding, decide_vat
from ratecard.services.plan_documents import load_plan
from ratecard.services.rating import (
    Action,
    ChangeSpec,
    SubscriptionSpec,
    subscription_drafts,
)
from ratecard.services.scenarios import ScenarioDoc, parse_scenario, reference_problems


@dataclass(frozen=True, slots=True)
class SimulationResult:
    scenario: ScenarioDoc
    invoices: tuple[Invoice, ...]
    account: Account


def _plans(doc: ScenarioDoc) -> tuple[dict[str, Plan], list[Problem]]:
    plans: dict[str, Plan] = {}
    problems: list[Problem] = []
    meters = {m.code for m in doc.meters}
    for i, data in enumerate(doc.plans):
        try:
            plan = load_plan(data, f"plans[{i}]").plan
        except ValidationFailed as exc:
            problems.extend(exc.problems)
            continue
        if plan.code in plans:
            problems.append(
                Problem(
                    ErrorCode.INVALID_VALUE, f"duplicate plan {plan.code!r}", f"plans[{i}].code"
                )
            )
        if plan.currency != doc.customer.currency.upper():
            problems.append(
                Problem(
                    ErrorCode.CURRENCY_MISMATCH,
                    f"plan currency {plan.currency} differs from the customer's "
                    f"{doc.customer.currency.upper()}",
                    f"plans[{i}].currency",
                )
            )
        for j, charge in enumerate(plan.charges):
            if charge.meter_code is not None and charge.meter_code not in meters:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_VALUE,
                        f"unknown meter {charge.meter_code!r} (declare it under 'meters')",
                        f"plans[{i}].charges[{j}].meter",
                    )
                )
        plans[plan.code] = plan
    return plans, problems


def _meter_specs(doc: ScenarioDoc) -> dict[str, MeterSpec]:
    return {
        m.code: MeterSpec(
            aggregation=Aggregation(m.aggregation),
            value_property=m.property,
            filters=tuple(PropertyFilter(k, (v,)) for k, v in sorted(m.filters.items())),
            group_by=m.group_by,
            reset=MeterReset(m.reset),
            rounding=None
            if m.rounding is None
            else MeterRounding(m.rounding.mode, m.rounding.precision),
        )
        for m in doc.meters
    }


def _events(doc: ScenarioDoc, plans: dict[str, Plan]) -> dict[tuple[str, str], list[Event]]:
    """Events by (subscription id, meter code), deduplicated by id, in time order."""
    meter_props = {m.code: m.property for m in doc.meters}
    metering: dict[str, str] = {}  # meter -> the first subscription metering it
    for sub in doc.subscriptions:
        codes = {sub.plan} | {c.plan for c in sub.changes if c.plan}
        for code in sorted(codes):
            for charge in plans[code].charges:
                if charge.meter_code:
                    metering.setdefault(charge.meter_code, sub.id)
    seen: set[str] = set()
    found: dict[tuple[str, str], list[Event]] = {}
    for event in sorted(doc.events, key=lambda e: e.timestamp):
        if event.id is not None:
            if event.id in seen:
                continue
            seen.add(event.id)
        owner = event.subscription or metering.get(event.meter)
        if owner is None:
            continue
        properties: dict[str, str | Decimal] = dict(event.properties)
        prop = meter_props.get(event.meter)
        if event.value is not None and prop and prop not in properties:
            properties[prop] = event.value
        found.setdefault((owner, event.meter), []).append(
            Event(event.timestamp.astimezone(UTC), properties)
        )
    return found


class _Usage:
    """A UsageSource over the scenario's events for one subscription."""

    def __init__(
        self, sub_id: str, specs: dict[str, MeterSpec], events: dict[tuple[str, str], list[Event]]
    ):
        self.sub_id, self.specs, self.events = sub_id, specs, events

    def __call__(self, meter_code: str, span: Period, with_values: bool) -> Usage:
        spec = self.specs[meter_code]
        events = self.events.get((self.sub_id, meter_code), [])
        result = aggregate(spec, events, span.start_at, span.end_at)
        values: tuple[Decimal, ...] = ()
        if with_values and spec.value_property:
            values = tuple(
                Decimal(str(e.properties[spec.value_property]))
                for e in events
                if span.contains(e.timestamp) and spec.value_property in e.properties
            )
        return Usage(result.total.value, values)


def _coupons(doc: ScenarioDoc) -> dict[str, Coupon]:
    cur = currency(doc.customer.currency)
    coupons = {}
    for c in doc.coupons:
        fixed = c.amount_off is not None
        coupons[c.code] = Coupon(
            code=c.code,
            kind=CouponKind.FIXED_AMOUNT if fixed else CouponKind.PERCENT,
            duration=CouponDuration(c.duration),
            amount=Money.parse(str(c.amount_off), cur) if c.amount_off is not None else None,
            percent=c.percent_off,
            duration_periods=c.duration_periods,
        )
    return coupons


def _tax(doc: ScenarioDoc) -> tuple[TaxRate | None, str | None]:
    tax = doc.customer.tax
    if tax.exempt:
        return None, "Tax exempt"
    if tax.rate_percent is not None:
        return TaxRate("tax", "Tax", tax.rate_percent, tax.inclusive), None
    seller, buyer = doc.tenant.country, doc.customer.country
    if seller and buyer:
        on = min(s.start for s in doc.subscriptions).date()
        decision = decide_vat(
            seller_country=seller.upper(),
            buyer_country=buyer.upper(),
            buyer_vat_id=tax.tax_id,
            on=on,
        )
        return decision.rate, decision.note
    return None, None


def conventions(doc: ScenarioDoc) -> BillingConventions:
    tenant = doc.tenant
    return BillingConventions(
        rounding=tenant.rounding,
        proration=ProrationPolicy(tenant.rounding, method=ProrationMethod(tenant.proration)),
        behavior=ProrationBehavior(tenant.proration_behavior),
        credit_on_cancel=tenant.credit_on_cancel,
    )


def _changes(sub_doc: Any) -> list[ChangeSpec]:
    return [
        ChangeSpec(
            at=c.at.astimezone(UTC),
            action=Action(c.action),
            plan=PlanRef(c.plan, 1) if c.plan else None,
            quantity=c.quantity,
            when=Effective.NOW if c.when == "now" else Effective.PERIOD_END,
        )
        for c in sub_doc.changes
        if c.action != "apply_coupon"
    ]


def _raw_plan_problems(data: Any) -> list[Problem]:
    """Problems inside the plans of a scenario whose shape failed, so all show at once."""
    raw = data.get("plans") if isinstance(data, dict) else None
    problems: list[Problem] = []
    for i, plan in enumerate(raw if isinstance(raw, list) else []):
        try:
            load_plan(plan, f"plans[{i}]")
        except ValidationFailed as exc:
            problems.extend(exc.problems)
    return problems


def _first_failing_change(
    spec: SubscriptionSpec, changes: Sequence[ChangeSpec], book: PlanBook, end_at: datetime
) -> int:
    from ratecard.services.rating import timeline

    for k in range(len(changes)):
        try:
            timeline(spec, changes[: k + 1], book, end_at)
        except RatecardError:
            return k
    return len(changes)


def simulate(data: Any) -> SimulationResult:
    """Validate and run a scenario document; every problem is reported at once, its path as
    the document writes it (``subscription.quantity`` for a single ``subscription:``)."""
    try:
        return _simulate(data)
    except ValidationFailed as failed:
        if not (isinstance(data, dict) and "subscription" in data and "subscriptions" not in data):
            raise
        raise ValidationFailed([_as_written(p) for p in failed.problems]) from None


def _as_written(problem: Problem) -> Problem:
    field, single = problem.field, "subscriptions[0]"
    if field is None or not (field == single or field.startswith((f"{single}.", f"{single}["))):
        return problem
    return replace(problem, field="subscription" + field.removeprefix(single))


def _simulate(data: Any) -> SimulationResult:
    try:
        doc = parse_scenario(data)
    except ValidationFailed as exc:
        raise ValidationFailed([*exc.problems, *_raw_plan_problems(data)]) from None
    plans, problems = _plans(doc)
    # A plan with problems of its own is still defined: naming it is not a problem too.
    named = {str(p.get("code", p.get("planId"))) for p in doc.plans if isinstance(p, dict)}
    problems += reference_problems(doc, set(plans) | named)
    for i, sub in enumerate(doc.subscriptions):
        for j, change in enumerate(sub.changes):
            if change.at >= doc.end:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_VALUE,
                        "a change must come before 'end'",
                        f"subscriptions[{i}].changes[{j}].at",
                    )
                )
    if problems:
        raise ValidationFailed(problems)
    book: PlanBook = {(p.code, p.version): p for p in plans.values()}
    specs = _meter_specs(doc)
    events = _events(doc, plans)
    end_at = doc.end.astimezone(UTC)
    conv = conventions(doc)
    coupons = _coupons(doc)
    drafts: list[tuple[str, Draft]] = []
    grants: list[CouponGrant] = []
    for i, sub in enumerate(doc.subscriptions):
        spec = SubscriptionSpec(
            id=sub.id,
            plan=PlanRef(sub.plan, 1),
            start_at=sub.start.astimezone(UTC),
            quantity=sub.quantity,
            timezone=doc.customer.timezone,
            calendar=sub.billing == "calendar",
            trial_days=sub.trial_days,
            anchor_at=sub.billing_anchor.astimezone(UTC) if sub.billing_anchor else None,
            minimum_term_end_at=(
                sub.contract.minimum_term_end.astimezone(UTC) if sub.contract else None
            ),
            auto_renew=sub.contract.auto_renew if sub.contract else True,
        )
        changes = _changes(sub)
        try:
            sub_drafts = subscription_drafts(
                spec,
                changes,
                book,
                usage=_Usage(sub.id, specs, events),
                conventions=conv,
                until_at=end_at,
            )
        except RatecardError as exc:
            k = _first_failing_change(spec, changes, book, end_at)
            raise ValidationFailed(
                [Problem(exc.code, exc.message, f"subscriptions[{i}].changes[{k}]")]
            ) from None
        drafts += [(sub.id, d) for d in sub_drafts]
        for code in sub.coupons:
            grants.append(CouponGrant(AppliedCoupon.start(coupons[code]), spec.start_at, sub.id))
        for change in sub.changes:
            if change.action == "apply_coupon" and change.coupon:
                grants.append(
                    CouponGrant(
                        AppliedCoupon.start(coupons[change.coupon]),
                        change.at.astimezone(UTC),
                        sub.id,
                    )
                )
    cur = currency(doc.customer.currency)
    tax_rate, tax_note = _tax(doc)
    account = Account(
        customer_id=doc.customer.id,
        currency=cur,
        tax_rate=tax_rate,
        tax_note=tax_note,
        credit_balance=Money.parse(str(doc.customer.credit_note_balance), cur),
        prepaid_balance=Money.parse(str(doc.customer.prepaid_credits), cur),
        coupons=tuple(grants),
        timezone=doc.customer.timezone,
    )
    policy = TotalsPolicy(
        rounding=doc.tenant.rounding,
        tax_rounding=TaxRounding(doc.tenant.tax_rounding),
        order=tuple(WaterfallStep(step) for step in doc.tenant.order),
        invoice_prefix=doc.tenant.invoice_prefix,
    )
    invoices, account = finalize_drafts(drafts, account, policy)
    return SimulationResult(doc, tuple(invoices), account)
