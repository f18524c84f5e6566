"""Coupons, commitments, termination credits and the totals waterfall: examples and properties."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.discounts import (
    DEFAULT_ORDER,
    AppliedCoupon,
    Coupon,
    CouponDuration,
    CouponKind,
    FeeLine,
    InvoiceTotals,
    WaterfallStep,
    apply_coupon,
    commitment_true_up,
    compute_totals,
)
from ratecard.core.errors import ErrorCode, RatecardError, ValidationFailed
from ratecard.core.money import D, Money, RoundingMode, currency
from ratecard.core.tax import TaxRate, TaxRounding

USD = currency("USD")
HALF_UP = RoundingMode.HALF_UP
VAT = TaxRate("VAT", "vat", D("20"))
ZERO = Money(0, USD)


def usd(minor: int) -> Money:
    return Money(minor, USD)


def fixed_once(minor: int) -> AppliedCoupon:
    return AppliedCoupon.start(
        Coupon("F", CouponKind.FIXED_AMOUNT, CouponDuration.ONCE, usd(minor))
    )


def totals(
    fees: list[FeeLine],
    coupons: list[AppliedCoupon],
    *,
    tax_rounding: TaxRounding = TaxRounding.LINE,
    credit_note_balance: Money = ZERO,
    prepaid_balance: Money = ZERO,
    order: Sequence[WaterfallStep] = DEFAULT_ORDER,
) -> InvoiceTotals:
    return compute_totals(
        fees,
        coupons,
        cur=USD,
        tax_rounding=tax_rounding,
        mode=HALF_UP,
        credit_note_balance=credit_note_balance,
        prepaid_balance=prepaid_balance,
        order=order,
    )


def test_fixed_once_coupon_carries_its_unused_value_to_the_next_invoice() -> None:
    credit, after = apply_coupon(fixed_once(5000), usd(3000), HALF_UP)
    assert credit == usd(3000) and after.remaining_value == usd(2000) and not after.terminated
    credit, after = apply_coupon(after, usd(9000), HALF_UP)
    assert credit == usd(2000) and after.terminated
    assert apply_coupon(after, usd(9000), HALF_UP)[0] == usd(0)


def test_percent_coupons_once_repeating_forever() -> None:
    once = AppliedCoupon.start(
        Coupon("P", CouponKind.PERCENT, CouponDuration.ONCE, percent=D("15"))
    )
    credit, after = apply_coupon(once, usd(1005), HALF_UP)
    assert credit == usd(151) and after.terminated  # 150.75 -> 151
    repeating = AppliedCoupon.start(
        Coupon(
            "R", CouponKind.PERCENT, CouponDuration.REPEATING, percent=D("10"), duration_periods=2
        )
    )
    _, repeating = apply_coupon(repeating, usd(100), HALF_UP)
    _, repeating = apply_coupon(repeating, usd(100), HALF_UP)
    assert repeating.terminated
    forever = AppliedCoupon.start(
        Coupon("E", CouponKind.PERCENT, CouponDuration.FOREVER, percent=D("10"))
    )
    for _ in range(50):
        credit, forever = apply_coupon(forever, usd(100), HALF_UP)
        assert credit == usd(10)


def test_coupon_needs_consistent_fields() -> None:
    with pytest.raises(ValidationFailed):
        Coupon("X", CouponKind.PERCENT, CouponDuration.ONCE, percent=D("0"))
    with pytest.raises(ValidationFailed):
        Coupon("X", CouponKind.FIXED_AMOUNT, CouponDuration.REPEATING, usd(10))


def test_commitment_true_up() -> None:
    assert commitment_true_up(usd(10000), usd(5000), proration=Fraction(1), mode=HALF_UP) == usd(
        5000
    )
    assert commitment_true_up(usd(10000), usd(12000), proration=Fraction(1), mode=HALF_UP) == usd(0)
    half = commitment_true_up(usd(10000), usd(2000), proration=Fraction(17, 31), mode=HALF_UP)
    assert half == usd(5484 - 2000)


def test_credits_before_tax_reduce_the_taxable_amount() -> None:
    order = (
        WaterfallStep.COUPONS,
        WaterfallStep.PREPAID,
        WaterfallStep.TAX,
        WaterfallStep.CREDIT_NOTES,
    )
    result = totals([FeeLine(usd(10000), VAT)], [], prepaid_balance=usd(2000), order=order)
    assert result.taxable == usd(8000) and result.tax == usd(1600)
    assert result.amount_due == usd(9600)
    default = totals([FeeLine(usd(10000), VAT)], [], prepaid_balance=usd(2000))
    assert default.tax == usd(2000) and default.amount_due == usd(10000)


def test_order_must_hold_each_step_once_with_coupons_before_tax() -> None:
    with pytest.raises(RatecardError) as err:
        totals(
            [],
            [],
            order=(
                WaterfallStep.TAX,
                WaterfallStep.COUPONS,
                WaterfallStep.PREPAID,
                WaterfallStep.CREDIT_NOTES,
            ),
        )
    assert err.value.code is ErrorCode.INVALID_WATERFALL_ORDER
    with pytest.raises(RatecardError):
        totals([], [], order=DEFAULT_ORDER[:3])


def test_inclusive_rate_fees_hold_their_tax() -> None:
    inclusive = TaxRate("VAT", "vat", D("20"), inclusive=True)
    result = totals([FeeLine(usd(12000), inclusive)], [])
    assert result.tax == usd(2000) and result.total_incl_tax == usd(12000)


def test_negative_subtotal_is_refused() -> None:
    with pytest.raises(RatecardError) as err:
        totals([FeeLine(usd(-100))], [])
    assert err.value.code is ErrorCode.NEGATIVE_INVOICE


def test_explanation_steps_end_at_the_amount_due() -> None:
    result = totals([FeeLine(usd(5000), VAT)], [fixed_once(1000)], credit_note_balance=usd(100))
    steps = result.steps
    assert [s.step for s in steps] == [
        "subtotal",
        "coupon F",
        "tax",
        "credit_notes",
        "prepaid",
        "amount due",
    ]
    assert steps[-1].running_total == result.amount_due == usd(4700)


fee_lists = st.lists(st.integers(min_value=0, max_value=1_000_000), min_size=1, max_size=10)
coupon_values = st.lists(st.integers(min_value=1, max_value=2_000_000), max_size=3)
percents = st.lists(st.decimals(min_value=1, max_value=100, places=2), max_size=2)
balances = st.integers(min_value=0, max_value=3_000_000)


@given(fee_lists, coupon_values, percents, balances, balances, st.sampled_from(list(TaxRounding)))
def test_waterfall_properties(
    fees: list[int],
    fixed: list[int],
    pcts: list[Decimal],
    credit_notes: int,
    prepaid: int,
    rounding: TaxRounding,
) -> None:
    coupons = [fixed_once(v) for v in fixed] + [
        AppliedCoupon.start(Coupon("P", CouponKind.PERCENT, CouponDuration.FOREVER, percent=p))
        for p in pcts
    ]
    lines = [FeeLine(usd(f), VAT if i % 2 else None) for i, f in enumerate(fees)]
    result = totals(
        lines,
        coupons,
        tax_rounding=rounding,
        credit_note_balance=usd(credit_notes),
        prepaid_balance=usd(prepaid),
    )
    r = result
    assert usd(0) <= r.discount <= r.subtotal
    for fee, discount in zip(fees, r.fee_discounts, strict=True):
        assert 0 <= discount.amount_minor <= fee
    assert r.amount_due >= usd(0)
    assert r.credit_notes_applied <= usd(credit_notes) and r.prepaid_applied <= usd(prepaid)
    if r.amount_due > usd(0):
        assert r.credit_notes_applied == usd(credit_notes) and r.prepaid_applied == usd(prepaid)
