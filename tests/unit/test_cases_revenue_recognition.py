"""Worked revenue cases (revenue_recognition.json) through ratecard.core.revenue."""

from __future__ import annotations

from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

import pytest

from ratecard.core.discounts import commitment_true_up
from ratecard.core.money import D, Money, RoundingMode, currency
from ratecard.core.revenue import (
    Account,
    RecognitionConvention,
    account_balances,
    accrual_entry,
    allocate_transaction_price,
    arrears_accrual,
    credit_note_entry,
    deferred_balance,
    invoice_issued_entry,
    payment_entry,
    per_day,
    recognition_entry,
    recognition_schedule,
)
from ratecard.core.tax import TaxRate, tax_amount
from tests.cases import params

HALF_UP = RoundingMode.HALF_UP
Conv = RecognitionConvention


def _at(text: str) -> datetime:
    if "T" in text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)


def _by_month(inp: dict[str, Any], convention: RecognitionConvention) -> dict[str, Any]:
    amount = Money.parse(inp["amount"], currency(inp["currency"]))
    end = inp.get("service_end_exclusive") or inp["service_end"]
    schedule = recognition_schedule(
        amount, _at(inp["service_start"]), _at(end), convention, HALF_UP
    )
    return {e.month_on.isoformat()[:7]: e.amount.to_decimal() for e in schedule.entries}


def _assert_months(got: dict[str, Any], expected: dict[str, str]) -> None:
    assert got == {k: D(v) for k, v in expected.items()}


def _stripe_daily(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    _assert_months(_by_month(inp, Conv.DAILY_EXCLUSIVE_END), exp["recognized_by_month"])
    amount = Money.parse(inp["amount"], currency(inp["currency"]))
    schedule = recognition_schedule(
        amount,
        _at(inp["service_start"]),
        _at(inp["service_end_exclusive"]),
        Conv.DAILY_EXCLUSIVE_END,
        HALF_UP,
    )
    end_of_jan = datetime(2019, 2, 1, tzinfo=UTC)
    assert deferred_balance(schedule, end_of_jan, HALF_UP).to_decimal() == D(
        exp["deferred_at_end_of_jan"]
    )


def _stripe_seconds(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    _assert_months(_by_month(inp, Conv.SECOND), exp["recognized_by_month"])


def _stripe_month_even(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    _assert_months(_by_month(inp, Conv.MONTH_EVEN_PRORATED_ENDS), exp["recognized_by_month"])


def _lago_annual(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    amount = Money.parse(inp["amount"], currency(inp["currency"]))
    schedule = recognition_schedule(
        amount, _at(inp["service_start"]), _at(inp["service_end"]), Conv.DAILY_INCLUSIVE, HALF_UP
    )
    assert schedule.days == 365
    assert per_day(amount, schedule.days, HALF_UP).to_decimal() == D(exp["daily"])
    assert schedule.entries[0].amount.to_decimal() == D(exp["recognized_january"])
    end_of_jan = datetime(2025, 2, 1, tzinfo=UTC)
    assert deferred_balance(schedule, end_of_jan, HALF_UP).to_decimal() == D(
        exp["deferred_at_jan_31"]
    )


def _lago_arrears(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    accrual = arrears_accrual(
        Money.parse(inp["amount"], currency(inp["currency"])), inp["service_days"], HALF_UP
    )
    assert accrual.daily.to_decimal() == D(exp["daily"])
    assert accrual.unbilled_after(inp["service_days"]).to_decimal() == D(exp["unbilled_at_jan_31"])
    assert accrual.true_up.to_decimal() == D(exp["true_up_at_invoice"])


def _lago_lifecycle(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    cur = currency(inp["currency"])
    jan1, jan31 = date(2025, 1, 1), date(2025, 1, 31)
    fee = Money.parse(inp["annual_fee"], cur)
    invoice = tax_amount(fee, TaxRate("T", "tax", D(inp["tax_rate_percent"])), HALF_UP)
    schedule = recognition_schedule(
        fee, _at("2025-01-01"), _at("2025-12-31"), Conv.DAILY_INCLUSIVE, HALF_UP
    )
    usage = Money.from_decimal(inp["api_calls"] * D(inp["price_per_call"]), cur, HALF_UP)
    true_up = commitment_true_up(
        Money.parse(inp["usage_commitment"], cur), usage, proration=Fraction(1), mode=HALF_UP
    )
    zero = Money.zero(cur)
    entries = [
        invoice_issued_entry(jan1, deferred=fee, unbilled=zero, revenue=zero, tax=invoice.tax),
        payment_entry(jan1, Money.parse(inp["payment_received"], cur)),
        recognition_entry(jan31, schedule.entries[0].amount),
        accrual_entry(jan31, usage),  # usage billed in arrears on Feb 1
        invoice_issued_entry(jan31, deferred=zero, unbilled=zero, revenue=true_up, tax=zero),
        credit_note_entry(jan31, net=Money.parse(inp["credit_note"], cur), tax=zero),
    ]
    balances = account_balances(entries)
    revenue = -(balances[Account.REVENUE] + balances[Account.CONTRA_REVENUE])
    assert invoice.gross.to_decimal() == D(exp["subscription_invoice_total"])
    assert true_up.to_decimal() == D(exp["true_up"])
    assert revenue.to_decimal() == D(exp["recognized_january"])
    assert (-balances[Account.DEFERRED_REVENUE]).to_decimal() == D(exp["deferred_at_jan_31"])
    assert balances[Account.UNBILLED_REVENUE].to_decimal() == D(exp["unbilled_at_jan_31"])
    assert (-balances[Account.TAX_PAYABLE]).to_decimal() == D(exp["tax_liability"])


def _relative_ssp(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    whole = currency("JPY")  # a zero-exponent currency: "whole units, sum preserved"
    ssp = {k: Money.parse(v, whole) for k, v in inp["standalone_selling_prices"].items()}
    result = allocate_transaction_price(Money.parse(inp["transaction_price"], whole), ssp)
    assert {a.obligation: a.allocated.to_decimal() for a in result} == {
        k: D(v) for k, v in exp["allocation"].items()
    }
    assert {a.obligation: a.discount.to_decimal() for a in result} == {
        k: D(v) for k, v in exp["discount_allocated"].items()
    }


ADAPTERS = {
    "RR-STRIPE-MONTHLY-31": _stripe_daily,
    "RR-STRIPE-AMORT-MILLISECOND": _stripe_seconds,
    "RR-STRIPE-AMORT-MONTH-EVEN-PRORATED-ENDS": _stripe_month_even,
    "RR-LAGO-ANNUAL-1200": _lago_annual,
    "RR-LAGO-MONTHLY-50-ARREARS": _lago_arrears,
    "RR-LAGO-FULL-LIFECYCLE": _lago_lifecycle,
    "RR-ASC606-RELATIVE-SSP-TELCO": _relative_ssp,
}


@pytest.mark.parametrize("case", params("revenue_recognition"))
def test_revenue_recognition_case(case: dict[str, Any]) -> None:
    ADAPTERS[case["id"]](case["input"], case["expected"])
