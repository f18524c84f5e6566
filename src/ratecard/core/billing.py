"""Billing a subscription's timeline: which lines, at which instant, for which period.

Worked example — Pro (100.00/month, in advance) from Jan 1, upgraded to Max (300.00) on Jan 15
"now", billed by day in UTC with `invoice_now`::

    Jan 1    cycle   Pro, Jan 1 - Feb 1                          100.00
    Jan 15   change  Unused time on Pro (17 of 31 days)          -54.84
                     Remaining time on Max (17 of 31 days)       164.52
    Feb 1    cycle   Max, Feb 1 - Mar 1                          300.00   (+ usage of January)

The rules, all pure functions of the timeline (`core.subscriptions`), the plans and the usage:
- each billing period `P` bills its in-advance charges at its start, for the state in effect then
  (a stub period is prorated against the full calendar period);
- at every boundary inside `P` where the state changes (plan, quantity, pause, resume, cancel
  now), the unused time of the old state is credited and the remaining time of the new state is
  charged, each as its own line rounded once — trialing and paused states cost nothing, so a
  pause credits and a resume charges, and a cancel now credits (if the tenant credits cancels);
- in-arrears charges bill at the end of `P` (or when service stops): metered charges on the usage
  of each span with the same plan version (a seat change does not restart usage tiers), other
  in-arrears charges per segment, prorated when the charge prorates;
- a plan's minimum commitment is trued up at the end of `P`: `max(0, minimum × share of P served
  − everything billed for P)`;
- lines at one instant form one draft invoice; with `next_invoice`, proration lines wait for the
  subscription's next invoice; with `none`, changes bill nothing until the next period.

Totals (coupons, tax, credits) are applied to the drafts in time order by `finalize_drafts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

from ratecard.core.catalog import BillingTiming, Charge, ChargeModel, Plan, QuantitySource
from ratecard.core.invoicing import (
    InvoiceLine,
    InvoiceReason,
    LineKind,
    ProrationInfo,
    TierUse,
    make_line,
)
from ratecard.core.money import Currency, Money, RoundingMode, currency
from ratecard.core.periods import Period, calendar_period, period_containing
from ratecard.core.pricing import Rating, Usage, rate
from ratecard.core.proration import ProrationMethod, ProrationPolicy, measure, proration_fraction
from ratecard.core.subscription_model import MomentKind, Segment, Status
from ratecard.core.subscriptions import Timeline

#: Statuses whose time is paid for; trialing and paused time is free.
BILLABLE = frozenset({Status.ACTIVE, Status.PAST_DUE})

PlanBook = Mapping[tuple[str, int], Plan]
#: The usage of one meter over a span: (meter_code, span, with per-event values) -> Usage.
UsageSource = Callable[[str, Period, bool], Usage]


class ProrationBehavior(StrEnum):
    INVOICE_NOW = "invoice_now"  # a change is invoiced at once (Lago)
    NEXT_INVOICE = "next_invoice"  # proration lines wait for the next invoice (Stripe default)
    NONE = "none"  # changes take effect without proration lines


@dataclass(frozen=True, slots=True)
class BillingConventions:
    rounding: RoundingMode
    proration: ProrationPolicy
    behavior: ProrationBehavior = ProrationBehavior.INVOICE_NOW
    credit_on_cancel: bool = True


@dataclass(frozen=True, slots=True)
class Draft:
    """Lines that fall due at one instant for one subscription, before totals."""

    at: datetime
    reason: InvoiceReason
    period: Period | None
    lines: tuple[InvoiceLine, ...]


@dataclass(slots=True)
class _Context:
    timeline: Timeline
    plans: PlanBook
    usage: UsageSource
    conv: BillingConventions
    tz: ZoneInfo
    cur: Currency
    calendar: bool
    until_at: datetime
    billed: dict[datetime, list[InvoiceLine]] = field(default_factory=dict)

    def plan(self, seg: Segment) -> Plan:
        return self.plans[(seg.plan_code, seg.plan_version)]


def _fmt_day(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%d %b %Y")


def _quantity(charge: Charge, seats: int) -> Decimal:
    if charge.source is QuantitySource.SEATS:
        return Decimal(seats)
    return charge.fixed_quantity


def _tiers(rating: Rating) -> tuple[TierUse, ...]:
    return tuple(
        TierUse(b.description, b.quantity, b.unit_price, b.amount) for b in rating.breakdown
    )


def _unit_price(charge: Charge) -> Decimal | None:
    price = charge.price
    if charge.model is ChargeModel.PER_UNIT:
        return price.unit_price
    if charge.model is ChargeModel.FLAT:
        return price.amount
    return None


def _proration_info(
    ctx: _Context, part: Period, whole: Period, fraction: Fraction
) -> ProrationInfo:
    policy = ctx.conv.proration
    unit = "s" if policy.method is ProrationMethod.SECOND else "days"
    used, of = measure(part, ctx.tz, policy), measure(whole, ctx.tz, policy)
    if unit == "s":
        used, of = used / 1_000_000, of / 1_000_000
    return ProrationInfo(fraction, f"{used} {unit}", f"{of} {unit}", policy.method.value)


def _full_period(ctx: _Context, period: Period) -> Period:
    """The whole period a (possibly stub) billing period is a part of."""
    state = ctx.timeline.state_at(period.start_at)
    interval = state.interval
    if ctx.calendar:
        return calendar_period(period.start_at, interval, ctx.tz)
    full = period_containing(period.start_at, state.anchor_at, interval, ctx.tz, calendar=False)
    return full if full.covers(period) else period


def _fee_line(
    ctx: _Context,
    plan: Plan,
    charge: Charge,
    rating: Rating,
    *,
    kind: LineKind,
    period: Period,
    quantity: Decimal,
    whole: Period | None = None,
    sign: int = 1,
    description: str | None = None,
) -> InvoiceLine:
    """One charge's line: its rating over `period`, prorated against `whole` when it prorates."""
    fraction = Fraction(1)
    if whole is not None and charge.prorate:
        fraction = proration_fraction(period, whole, ctx.tz, ctx.conv.proration)
    proration = None
    if whole is not None and fraction != 1:
        proration = _proration_info(ctx, period, whole, fraction)
    return make_line(
        kind=kind,
        description=description or f"{plan.name} — {charge.name or charge.code}",
        charge_code=charge.code,
        exact=Fraction(rating.amount) * fraction * sign,
        currency=ctx.cur,
        mode=ctx.conv.rounding,
        period=period,
        quantity=quantity,
        unit_price=_unit_price(charge),
        plan_code=plan.code,
        plan_version=plan.version,
        tiers=_tiers(rating),
        proration=proration,
    )


def _advance_lines(
    ctx: _Context, seg: Segment, part: Period, whole: Period, *, kind: LineKind, sign: int
) -> list[InvoiceLine]:
    """In-advance charges of `seg`'s state over `part` of `whole` (sign -1 for a credit)."""
    if seg.status not in BILLABLE:
        return []
    plan = ctx.plan(seg)
    lines = []
    day = _fmt_day(part.start_at, ctx.tz)
    for charge in plan.charges:
        if charge.timing is not BillingTiming.IN_ADVANCE:
            continue
        if not charge.prorate and part != whole and kind is not LineKind.CHARGE:
            # A charge that does not prorate is neither credited nor charged again mid-period.
            continue
        quantity = _quantity(charge, seg.quantity)
        name = charge.name or charge.code
        text = {
            LineKind.PRORATION_CREDIT: f"Unused time on {plan.name} — {name} from {day}",
            LineKind.PRORATION_DEBIT: f"Remaining time on {plan.name} — {name} from {day}",
        }.get(kind)
        rating = rate(charge.model, charge.price, Usage(quantity))
        lines.append(
            _fee_line(
                ctx,
                plan,
                charge,
                rating,
                kind=kind,
                period=part,
                quantity=quantity,
                whole=whole,
                sign=sign,
                description=text,
            )
        )
    return lines


def _metered_spans(segments: Sequence[Segment]) -> list[tuple[Segment, Period]]:
    """Consecutive billable segments on the same plan version, merged into one usage span."""
    spans: list[tuple[Segment, Period]] = []
    for seg in segments:
        if seg.status not in BILLABLE:
            continue
        if spans:
            last, span = spans[-1]
            same_plan = (last.plan_code, last.plan_version) == (seg.plan_code, seg.plan_version)
            if same_plan and span.end_at == seg.start_at:
                spans[-1] = (last, Period(span.start_at, seg.end_at))
                continue
        spans.append((seg, seg.period))
    return spans


def _arrears_lines(ctx: _Context, segments: Sequence[Segment], whole: Period) -> list[InvoiceLine]:
    lines: list[InvoiceLine] = []
    for seg, span in _metered_spans(segments):
        plan = ctx.plan(seg)
        for charge in plan.charges:
            if charge.timing is not BillingTiming.IN_ARREARS or charge.meter_code is None:
                continue
            per_event = charge.model is ChargeModel.PERCENTAGE
            usage = ctx.usage(charge.meter_code, span, per_event)
            rating = rate(charge.model, charge.price, usage)
            lines.append(
                _fee_line(
                    ctx,
                    plan,
                    charge,
                    rating,
                    kind=LineKind.USAGE,
                    period=span,
                    quantity=usage.quantity,
                )
            )
    for seg in segments:
        if seg.status not in BILLABLE:
            continue
        plan = ctx.plan(seg)
        for charge in plan.charges:
            if charge.timing is not BillingTiming.IN_ARREARS or charge.meter_code is not None:
                continue
            quantity = _quantity(charge, seg.quantity)
            rating = rate(charge.model, charge.price, Usage(quantity))
            lines.append(
                _fee_line(
                    ctx,
                    plan,
                    charge,
                    rating,
                    kind=LineKind.CHARGE,
                    period=seg.period,
                    quantity=quantity,
                    whole=whole,
                )
            )
    return lines


def _commitment_line(
    ctx: _Context, segments: Sequence[Segment], whole: Period, billed: Sequence[InvoiceLine]
) -> list[InvoiceLine]:
    served = [s for s in segments if s.status in BILLABLE]
    if not served:
        return []
    plan = ctx.plan(served[-1])
    if not plan.commitments:
        return []
    commitment = plan.commitments[0]
    share = Fraction(1)
    if commitment.prorate:
        share = sum(
            (proration_fraction(s.period, whole, ctx.tz, ctx.conv.proration) for s in served),
            Fraction(0),
        )
    spent = sum(line.amount.amount_minor for line in billed)
    minimum = Fraction(commitment.minimum_amount) * share
    shortfall = minimum - Fraction(spent, 10**ctx.cur.exponent)
    if shortfall <= 0:
        return []
    line = make_line(
        kind=LineKind.COMMITMENT_TRUE_UP,
        description=f"{plan.name} — minimum commitment true-up",
        charge_code=None,
        exact=shortfall,
        currency=ctx.cur,
        mode=ctx.conv.rounding,
        period=whole,
        quantity=Decimal(1),
        plan_code=plan.code,
        plan_version=plan.version,
        proration=None if share == 1 else _proration_info(ctx, whole, whole, share),
    )
    return [line] if not line.amount.is_zero() else []


@dataclass(slots=True)
class _Pending:
    at: datetime
    reason: InvoiceReason
    period: Period | None
    lines: list[InvoiceLine]


def _periods(ctx: _Context) -> list[Period]:
    """Billing periods in order, each cut short where the next one starts (interval change)."""
    starts = [m.period for m in ctx.timeline.moments if m.kind is MomentKind.PERIOD_START]
    periods = []
    for i, period in enumerate(starts):
        end_at = period.end_at
        if i + 1 < len(starts) and starts[i + 1].start_at < end_at:
            end_at = starts[i + 1].start_at
        periods.append(Period(period.start_at, end_at))
    return periods


def bill_timeline(
    timeline: Timeline,
    plans: PlanBook,
    usage: UsageSource,
    conv: BillingConventions,
    *,
    calendar: bool,
    until_at: datetime,
) -> list[Draft]:
    """Every draft invoice of one subscription's timeline up to `until_at`, in time order."""
    first = timeline.steps[0].state
    plan = plans[(first.plan.plan_code, first.plan.plan_version)]
    ctx = _Context(
        timeline, plans, usage, conv, first.tz, currency(plan.currency), calendar, until_at
    )
    items: list[_Pending] = []
    starts = [m.period for m in timeline.moments if m.kind is MomentKind.PERIOD_START]
    for index, (period, declared) in enumerate(zip(_periods(ctx), starts, strict=True)):
        if period.start_at > until_at:
            break
        segments = timeline.segments(period)
        if not segments:
            continue
        items += _period_items(ctx, index, period, declared, segments)
    return _group([item for item in items if item.at <= until_at], conv.behavior)


def _period_items(
    ctx: _Context, index: int, period: Period, declared: Period, segments: Sequence[Segment]
) -> list[_Pending]:
    """The advance, change and arrears items of one billing period."""
    whole = _full_period(ctx, declared)
    items: list[_Pending] = []
    billed: list[InvoiceLine] = []
    if segments[0].start_at == period.start_at:
        first = InvoiceReason.SUBSCRIPTION_START if index == 0 else InvoiceReason.SUBSCRIPTION_CYCLE
        lines = _advance_lines(ctx, segments[0], declared, whole, kind=LineKind.CHARGE, sign=1)
        billed += lines
        items.append(_Pending(period.start_at, first, declared, lines))
    for before, at, after in _boundaries(segments, period):
        part = Period(at, declared.end_at)
        lines = []
        if after is not None or ctx.conv.credit_on_cancel:
            lines += _advance_lines(
                ctx, before, part, whole, kind=LineKind.PRORATION_CREDIT, sign=-1
            )
        if after is not None:
            lines += _advance_lines(ctx, after, part, whole, kind=LineKind.PRORATION_DEBIT, sign=1)
        if ctx.conv.behavior is ProrationBehavior.NONE:
            lines = []
        billed += lines
        items.append(_Pending(at, InvoiceReason.SUBSCRIPTION_CHANGE, declared, lines))
    service_end = segments[-1].end_at
    if service_end > ctx.until_at:
        return items  # the arrears of this period are not due yet
    ended = service_end < period.end_at
    arrears = _arrears_lines(ctx, segments, whole)
    billed += arrears
    arrears += _commitment_line(ctx, segments, whole, billed)
    reason = InvoiceReason.SUBSCRIPTION_END if ended else InvoiceReason.SUBSCRIPTION_CYCLE
    items.append(_Pending(service_end, reason, declared, arrears))
    return items


def _boundaries(
    segments: Sequence[Segment], period: Period
) -> list[tuple[Segment, datetime, Segment | None]]:
    """(state before, instant, state after or None when service stops) inside `period`."""
    found: list[tuple[Segment, datetime, Segment | None]] = [
        (before, after.start_at, after) for before, after in pairwise(segments)
    ]
    last = segments[-1]
    if last.end_at < period.end_at:
        found.append((last, last.end_at, None))
    return found


def _group(items: list[_Pending], behavior: ProrationBehavior) -> list[Draft]:
    """Lines at one instant form one draft; `next_invoice` defers proration lines."""
    items.sort(key=lambda item: item.at)
    drafts: list[Draft] = []
    carried: list[InvoiceLine] = []
    index = 0
    while index < len(items):
        at = items[index].at
        group = [item for item in items[index:] if item.at == at]
        index += len(group)
        reason = _reason(group)
        lines = [line for item in group for line in item.lines]
        if (
            behavior is ProrationBehavior.NEXT_INVOICE
            and reason is InvoiceReason.SUBSCRIPTION_CHANGE
        ):
            carried += lines
            continue
        lines = carried + lines
        carried = []
        period = next((item.period for item in reversed(group) if item.period), None)
        if lines:
            drafts.append(Draft(at, reason, period, tuple(lines)))
    if carried:
        drafts.append(Draft(items[-1].at, InvoiceReason.SUBSCRIPTION_CHANGE, None, tuple(carried)))
    return drafts


_REASON_RANK = {
    InvoiceReason.SUBSCRIPTION_CHANGE: 0,
    InvoiceReason.SUBSCRIPTION_CYCLE: 1,
    InvoiceReason.SUBSCRIPTION_END: 2,
    InvoiceReason.SUBSCRIPTION_START: 3,
}


def _reason(group: Sequence[_Pending]) -> InvoiceReason:
    return max((item.reason for item in group), key=_REASON_RANK.__getitem__)


def total_of(lines: Sequence[InvoiceLine], cur: Currency) -> Money:
    return Money(sum(line.amount.amount_minor for line in lines), cur)
