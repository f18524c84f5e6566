"""Coupons, credits, minimum commitments and the invoice totals waterfall.

Worked example — Lago's invoice: fees 50.00 + 20.00, a 10.00 coupon, 10% tax, 20.00 of
credit notes and 30.00 of prepaid credits, in the default order (coupons, tax, credit notes,
prepaid)::

    subtotal              70.00
    coupons              -10.00   spread over the fees by amount: -7.14 / -2.86
    taxable               60.00
    tax 10%                6.00
    total incl. tax       66.00
    credit notes         -20.00
    prepaid credits      -30.00
    amount due            16.00

Rules held here:
- a coupon's credit is `min(coupon value left, discountable subtotal excl. tax)`; it never
  exceeds the subtotal, and it is spread over the positive fees by `allocate()`;
- fixed-amount coupons used once keep their unused value for the next invoice; repeating
  coupons count down their periods; forever coupons never end;
- credit notes and prepaid credits are applied after tax by default; placed before `TAX` in
  the order they reduce the taxable amount like a discount (other engines' convention);
- the amount due is never negative; a credit is applied only up to what is still due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from ratecard.core.errors import ErrorCode, RatecardError, invalid
from ratecard.core.money import Currency, Money, RoundingMode, allocate
from ratecard.core.tax import TaxRate, TaxRounding, exact_tax_minor, round_minor, tax_lines


class CouponKind(StrEnum):
    PERCENT = "percent"
    FIXED_AMOUNT = "fixed_amount"


class CouponDuration(StrEnum):
    ONCE = "once"  # fixed: until its value is used up; percent: one invoice
    REPEATING = "repeating"  # for `duration_periods` invoices
    FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class Coupon:
    code: str
    kind: CouponKind
    duration: CouponDuration
    amount: Money | None = None  # FIXED_AMOUNT
    percent: Decimal | None = None  # PERCENT, e.g. D("15") for 15%
    duration_periods: int | None = None  # REPEATING

    def __post_init__(self) -> None:
        fixed = self.kind is CouponKind.FIXED_AMOUNT
        if fixed and (self.amount is None or self.amount.amount_minor <= 0):
            raise invalid("a fixed-amount coupon needs a positive amount", "amount")
        if not fixed and (self.percent is None or not 0 < self.percent <= 100):
            raise invalid("a percent coupon needs a percent in (0, 100]", "percent")
        repeating = self.duration is CouponDuration.REPEATING
        if repeating != (self.duration_periods is not None):
            raise invalid("duration_periods is for repeating coupons only", "duration_periods")
        if self.duration_periods is not None and self.duration_periods < 1:
            raise invalid("duration_periods must be at least 1", "duration_periods")


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    """A coupon on a customer: the value or periods it has left."""

    coupon: Coupon
    remaining_value: Money | None  # fixed-amount ONCE coupons
    periods_remaining: int | None  # REPEATING coupons, and percent ONCE coupons (1)

    @classmethod
    def start(cls, coupon: Coupon, consumed: Money | None = None) -> AppliedCoupon:
        """A fresh application; `consumed` is value already used by earlier invoices."""
        remaining = None
        if coupon.kind is CouponKind.FIXED_AMOUNT and coupon.duration is CouponDuration.ONCE:
            assert coupon.amount is not None
            remaining = coupon.amount - consumed if consumed else coupon.amount
            assert remaining.amount_minor >= 0, "consumed more than the coupon's value"
        periods = coupon.duration_periods
        if coupon.kind is CouponKind.PERCENT and coupon.duration is CouponDuration.ONCE:
            periods = 1
        return cls(coupon, remaining, periods)

    @property
    def terminated(self) -> bool:
        if self.remaining_value is not None and self.remaining_value.is_zero():
            return True
        return self.periods_remaining == 0


def apply_coupon(
    applied: AppliedCoupon, base: Money, mode: RoundingMode
) -> tuple[Money, AppliedCoupon]:
    """The credit a coupon gives on a discountable `base` (>= 0), and its state afterwards.

    A repeating coupon uses up a period on every invoice it is applied to, even a zero one.
    """
    assert base.amount_minor >= 0
    coupon = applied.coupon
    if applied.terminated:
        return Money.zero(base.currency), applied
    if coupon.kind is CouponKind.FIXED_AMOUNT:
        cap = applied.remaining_value if applied.remaining_value is not None else coupon.amount
        assert cap is not None
        credit = min(cap, base)
    else:
        assert coupon.percent is not None
        exact = base.amount_minor * Fraction(coupon.percent) / 100
        credit = Money(min(round_minor(exact, mode), base.amount_minor), base.currency)
    after = applied
    if applied.remaining_value is not None:
        after = replace(after, remaining_value=applied.remaining_value - credit)
    if applied.periods_remaining is not None:
        after = replace(after, periods_remaining=applied.periods_remaining - 1)
    assert Money.zero(base.currency) <= credit <= base
    return credit, after


def commitment_true_up(
    minimum: Money, charges_subtotal: Money, *, proration: Fraction, mode: RoundingMode
) -> Money:
    """`max(0, minimum x proration - charges subtotal)`: the minimum-spend top-up fee.

    `proration` is the share of the period served (Fraction(1) for a full period).
    """
    assert 0 <= proration <= 1
    prorated = Money(round_minor(minimum.amount_minor * proration, mode), minimum.currency)
    return max(prorated - charges_subtotal, Money.zero(minimum.currency))


# --- the totals waterfall -----------------------------------------------------------------


class WaterfallStep(StrEnum):
    COUPONS = "coupons"
    TAX = "tax"
    CREDIT_NOTES = "credit_notes"
    PREPAID = "prepaid"


#: Lago's documented order, our default: coupons before tax, tax on the discounted subtotal,
#: then credit-note credits, then prepaid (wallet) credits.
DEFAULT_ORDER: tuple[WaterfallStep, ...] = (
    WaterfallStep.COUPONS,
    WaterfallStep.TAX,
    WaterfallStep.CREDIT_NOTES,
    WaterfallStep.PREPAID,
)


@dataclass(frozen=True, slots=True)
class FeeLine:
    amount: Money
    tax_rate: TaxRate | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    step: str
    amount: Money  # the change this step made (negative for reductions)
    running_total: Money


@dataclass(frozen=True, slots=True)
class InvoiceTotals:
    subtotal: Money
    discount: Money
    pre_tax_credits: Money
    taxable: Money
    tax: Money
    total_incl_tax: Money
    credit_notes_applied: Money
    prepaid_applied: Money
    amount_due: Money
    fee_discounts: tuple[Money, ...]  # per fee, same order as the fees
    fee_taxes: tuple[Money, ...]
    coupons: tuple[AppliedCoupon, ...]  # the states after this invoice
    steps: tuple[Explanation, ...]

    def __post_init__(self) -> None:
        cur = self.subtotal.currency
        assert self.subtotal - self.discount - self.pre_tax_credits == self.taxable
        assert sum(d.amount_minor for d in self.fee_discounts) == self.discount.amount_minor
        assert sum(t.amount_minor for t in self.fee_taxes) == self.tax.amount_minor
        post_tax = self.credit_notes_applied + self.prepaid_applied - self.pre_tax_credits
        assert self.total_incl_tax - post_tax == self.amount_due
        assert Money.zero(cur) <= self.discount <= self.subtotal
        assert self.amount_due >= Money.zero(cur)


def _validate_order(order: Sequence[WaterfallStep]) -> None:
    if sorted(order) != sorted(WaterfallStep) or list(order).index(WaterfallStep.COUPONS) > list(
        order
    ).index(WaterfallStep.TAX):
        raise RatecardError(
            "the order must name each step once, with coupons before tax",
            code=ErrorCode.INVALID_WATERFALL_ORDER,
            field="order",
        )


def compute_totals(
    fees: Sequence[FeeLine],
    coupons: Sequence[AppliedCoupon],
    *,
    cur: Currency,
    tax_rounding: TaxRounding,
    mode: RoundingMode,
    credit_note_balance: Money,
    prepaid_balance: Money,
    order: Sequence[WaterfallStep] = DEFAULT_ORDER,
) -> InvoiceTotals:
    """Subtotal -> coupons -> tax -> credit notes -> prepaid, in `order` (see module doc).

    Coupons are applied in the order given (Lago: fixed-amount first, then percent), each to
    what earlier coupons left. Inclusive-rate fees hold their tax: it is carved out of them and
    not added to the total.
    """
    _validate_order(order)
    net = [f.amount.amount_minor for f in fees]
    subtotal = sum(net)
    if subtotal < 0:
        raise RatecardError(
            "fees sum to a negative subtotal: issue a credit note instead",
            code=ErrorCode.NEGATIVE_INVOICE,
        )
    discounts = [0] * len(fees)
    states = list(coupons)
    taxes: list[int] | None = None
    exclusive_tax = 0
    applied = {WaterfallStep.CREDIT_NOTES: 0, WaterfallStep.PREPAID: 0}
    balances = {
        WaterfallStep.CREDIT_NOTES: credit_note_balance.amount_minor,
        WaterfallStep.PREPAID: prepaid_balance.amount_minor,
    }
    pre_tax_credits = 0
    steps = [Explanation("subtotal", Money(subtotal, cur), Money(subtotal, cur))]

    def reduce_fees(amount: int) -> list[int]:
        parts = allocate(amount, [max(n, 0) for n in net]) if net else []
        for i, part in enumerate(parts):
            net[i] -= part
        return parts

    for step in order:
        if step is WaterfallStep.COUPONS:
            for k, state in enumerate(states):
                credit, states[k] = apply_coupon(state, Money(max(sum(net), 0), cur), mode)
                for i, part in enumerate(reduce_fees(credit.amount_minor)):
                    discounts[i] += part
                steps.append(
                    Explanation(f"coupon {state.coupon.code}", -credit, Money(sum(net), cur))
                )
        elif step is WaterfallStep.TAX:
            rates = [f.tax_rate for f in fees]
            taxes = []
            if fees:
                lines = tax_lines([Money(n, cur) for n in net], rates, tax_rounding, mode)
                taxes = [t.amount_minor for t in lines.taxes]
            exclusive_tax = sum(
                t for t, r in zip(taxes, rates, strict=True) if r is not None and not r.inclusive
            )
            due = sum(net) + exclusive_tax
            steps.append(Explanation("tax", Money(exclusive_tax, cur), Money(due, cur)))
        else:
            if taxes is None:
                remaining = sum(net)
            else:
                remaining = sum(net) + exclusive_tax - (sum(applied.values()) - pre_tax_credits)
            amount = min(balances[step], max(remaining, 0))
            applied[step] += amount
            if taxes is None:
                pre_tax_credits += amount
                reduce_fees(amount)
            steps.append(
                Explanation(str(step), Money(-amount, cur), Money(remaining - amount, cur))
            )
    assert taxes is not None
    taxable = sum(net)
    total_incl_tax = taxable + exclusive_tax
    if total_incl_tax < 0:
        raise RatecardError("taxes make the invoice negative", code=ErrorCode.NEGATIVE_INVOICE)
    post_tax = sum(applied.values()) - pre_tax_credits
    totals = InvoiceTotals(
        subtotal=Money(subtotal, cur),
        discount=Money(sum(discounts), cur),
        pre_tax_credits=Money(pre_tax_credits, cur),
        taxable=Money(taxable, cur),
        tax=Money(sum(taxes), cur),
        total_incl_tax=Money(total_incl_tax, cur),
        credit_notes_applied=Money(applied[WaterfallStep.CREDIT_NOTES], cur),
        prepaid_applied=Money(applied[WaterfallStep.PREPAID], cur),
        amount_due=Money(total_incl_tax - post_tax, cur),
        fee_discounts=tuple(Money(d, cur) for d in discounts),
        fee_taxes=tuple(Money(t, cur) for t in taxes),
        coupons=tuple(states),
        steps=(
            *steps,
            Explanation("amount due", Money(0, cur), Money(total_incl_tax - post_tax, cur)),
        ),
    )
    return totals


# --- termination credit notes -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TerminationCredit:
    creditable_net: Money  # the unused part of the paid-in-advance fee
    creditable_tax: Money
    creditable: Money
    paid_share: Money  # this subscription's share of what the customer paid
    used_incl_tax: Money
    refundable: Money
    refund: Money  # back to the payment method
    credit: Money  # to the customer's credit balance

    def __post_init__(self) -> None:
        assert self.creditable_net + self.creditable_tax == self.creditable
        assert self.refund + self.credit == self.creditable
        assert self.refund.amount_minor >= 0 and self.credit.amount_minor >= 0


def termination_credit_note(
    *,
    unused: Money,
    used: Money,
    tax_rate: TaxRate | None,
    amount_paid: Money,
    subscription_share: Fraction,
    mode: RoundingMode,
) -> TerminationCredit:
    """Credit note when a pay-in-advance subscription ends early (Lago's rule).

    - creditable = unused amount + its tax;
    - paid share = amount paid on the invoice x this subscription's share of the invoice;
    - refundable = max(0, paid share - used amount incl. tax): only money actually paid beyond
      what the customer consumed goes back to the payment method;
    - refund = min(creditable, refundable); the rest of the creditable amount is a credit.

    Paid 74.40, share 1/2 -> 37.20; used 15.00 + 3.00 tax -> refundable 19.20 = creditable
    (unused 16.00 + 3.20): all refunded. Paid 9.30 -> 4.65 - 18.00 < 0: all 19.20 credited.
    """
    assert 0 <= subscription_share <= 1
    cur = unused.currency
    zero = Money.zero(cur)

    def tax_of(amount: Money) -> Money:
        if tax_rate is None or tax_rate.inclusive:
            return zero  # inclusive amounts already hold their tax
        return Money(round_minor(exact_tax_minor(amount.amount_minor, tax_rate), mode), cur)

    creditable_tax = tax_of(unused)
    creditable = unused + creditable_tax
    paid_share = Money(round_minor(amount_paid.amount_minor * subscription_share, mode), cur)
    used_incl_tax = used + tax_of(used)
    refundable = max(paid_share - used_incl_tax, zero)
    refund = min(creditable, refundable)
    return TerminationCredit(
        creditable_net=unused,
        creditable_tax=creditable_tax,
        creditable=creditable,
        paid_share=paid_share,
        used_incl_tax=used_incl_tax,
        refundable=refundable,
        refund=refund,
        credit=creditable - refund,
    )
