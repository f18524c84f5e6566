"""Worked coupon, waterfall and termination cases (credits_discounts.json) through core."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from ratecard.core.discounts import (
    AppliedCoupon,
    Coupon,
    CouponDuration,
    CouponKind,
    FeeLine,
    compute_totals,
    termination_credit_note,
)
from ratecard.core.money import D, Money, RoundingMode, currency
from ratecard.core.tax import TaxRate, TaxRounding
from tests.cases import params

HALF_UP = RoundingMode.HALF_UP
EUR = currency("EUR")


def _coupon(inp: dict[str, Any]) -> dict[str, Any]:
    fees = [FeeLine(Money(c, EUR)) for c in inp["fee_amounts_cents"]]
    amount = Money(inp["coupon_amount_cents"], EUR)
    if inp["frequency"] == "once":
        coupon = Coupon("C", CouponKind.FIXED_AMOUNT, CouponDuration.ONCE, amount=amount)
        consumed = Money(inp.get("already_consumed_cents", 0), EUR)
        applied = AppliedCoupon.start(coupon, consumed)
    else:
        periods = inp["frequency_duration_remaining"]
        coupon = Coupon(
            "C", CouponKind.FIXED_AMOUNT, CouponDuration.REPEATING, amount, duration_periods=periods
        )
        applied = AppliedCoupon.start(coupon)
    totals = compute_totals(
        fees,
        [applied],
        cur=EUR,
        tax_rounding=TaxRounding.LINE,
        mode=HALF_UP,
        credit_note_balance=Money.zero(EUR),
        prepaid_balance=Money.zero(EUR),
    )
    after = totals.coupons[0]
    return {
        "credit_cents": D(totals.discount.amount_minor),
        "fee_allocation_cents": [D(d.amount_minor) for d in totals.fee_discounts],
        "remaining_value_cents": after.remaining_value and D(after.remaining_value.amount_minor),
        "frequency_duration_remaining": after.periods_remaining,
        "terminated": after.terminated,
    }


def _check_coupon(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    got = _coupon(inp)
    assert got["credit_cents"] == D(exp["credit_cents"])
    assert got["fee_allocation_cents"] == [D(c) for c in exp["fee_allocation_cents"]]
    if "remaining_value_cents" in exp:
        assert got["remaining_value_cents"] == D(exp["remaining_value_cents"])
        assert got["terminated"] is (D(exp["remaining_value_cents"]) == 0)
    if "frequency_duration_remaining" in exp:
        assert got["frequency_duration_remaining"] == exp["frequency_duration_remaining"]


def _waterfall(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    cur = currency(inp["currency"])
    rate = TaxRate("T", "tax", D(inp["tax_rate_percent"]))
    fees = [
        FeeLine(Money.parse(inp["subscription_fees"], cur), rate),
        FeeLine(Money.parse(inp["usage_fees"], cur), rate),
    ]
    coupon = Coupon(
        "C", CouponKind.FIXED_AMOUNT, CouponDuration.ONCE, Money.parse(inp["coupons"], cur)
    )
    totals = compute_totals(
        fees,
        [AppliedCoupon.start(coupon)],
        cur=cur,
        tax_rounding=TaxRounding.INVOICE,
        mode=HALF_UP,
        credit_note_balance=Money.parse(inp["credit_notes"], cur),
        prepaid_balance=Money.parse(inp["prepaid_credits"], cur),
    )
    assert totals.taxable.to_decimal() == D(exp["subtotal_excl_tax"])
    assert totals.tax.to_decimal() == D(exp["tax"])
    assert totals.total_incl_tax.to_decimal() == D(exp["subtotal_incl_tax"])
    assert totals.amount_due.to_decimal() == D(exp["total_due"])


def _termination(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    cur = currency(inp["currency"])
    used, unused = (
        Money.parse(inp["used_subscription"], cur),
        Money.parse(inp["unused_subscription"], cur),
    )
    assert used + unused == Money.parse(inp["plan_amount"], cur)
    note = termination_credit_note(
        unused=unused,
        used=used,
        tax_rate=TaxRate("T", "tax", D(inp["tax_rate_percent"])),
        amount_paid=Money.parse(inp["invoice_total_paid"], cur),
        subscription_share=Fraction(D(inp["subscription_share"])),
        mode=HALF_UP,
    )
    assert note.creditable.to_decimal() == D(exp["total_creditable"])
    assert note.refund.to_decimal() == D(exp["refund"])
    assert note.credit.to_decimal() == D(exp["credit"])


ADAPTERS = {
    "CR-LAGO-COUPON-FIXED": _check_coupon,
    "CR-LAGO-COUPON-PARTIALLY-USED": _check_coupon,
    "CR-LAGO-COUPON-RECURRING": _check_coupon,
    "CR-LAGO-INVOICE-WATERFALL": _waterfall,
    "CR-LAGO-TERMINATION-REFUND-FULL": _termination,
    "CR-LAGO-TERMINATION-REFUND-NONE": _termination,
}


@pytest.mark.parametrize("case", params("credits_discounts"))
def test_credits_discounts_case(case: dict[str, Any]) -> None:
    ADAPTERS[case["id"]](case["input"], case["expected"])
