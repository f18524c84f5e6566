"""Worked tax cases (tests/data/cases/tax.json) through ratecard.core.tax."""

from __future__ import annotations

from typing import Any

import pytest

from ratecard.core.money import D, Money, RoundingMode, currency
from ratecard.core.tax import TaxRate, TaxRounding, credit_note_tax, tax_amount
from tests.cases import params

HALF_UP = RoundingMode.HALF_UP


def _rate(case_input: dict[str, Any], *, inclusive: bool = False) -> TaxRate:
    return TaxRate("T", "case rate", D(case_input["tax_rate_percent"]), inclusive)


def _inclusive_vs_exclusive(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    price = Money.parse(inp["price"], currency(inp["currency"]))
    inclusive = tax_amount(price, _rate(inp, inclusive=True), HALF_UP)
    exclusive = tax_amount(price, _rate(inp), HALF_UP)
    assert inclusive.gross.to_decimal() == D(exp["inclusive_total"])
    assert exclusive.gross.to_decimal() == D(exp["exclusive_total"])
    assert (inclusive.tax.to_decimal(), inclusive.net.to_decimal()) == (D("54.55"), D("545.45"))


def _credit_note(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    cur = currency(inp["currency"])
    item = Money(inp["credited_item_cents"], cur)
    taxes = credit_note_tax([item], [_rate(inp)], TaxRounding.LINE, HALF_UP)
    assert item.amount_minor == exp["sub_total_excluding_taxes_cents"]
    assert taxes.total.amount_minor == exp["taxes_amount_cents"]
    assert (item + taxes.total).amount_minor == exp["total_cents"]


def _subscription_tax(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    taxed = tax_amount(Money.parse(inp["fee"], currency(inp["currency"])), _rate(inp), HALF_UP)
    assert taxed.tax.to_decimal() == D(exp["tax"])
    assert taxed.gross.to_decimal() == D(exp["invoice_total"])


ADAPTERS = {
    "TX-STRIPE-INCLUSIVE-VS-EXCLUSIVE": _inclusive_vs_exclusive,
    "TX-LAGO-CREDIT-NOTE-TAX-ROUNDING": _credit_note,
    "TX-LAGO-LIFECYCLE-SUBSCRIPTION-TAX": _subscription_tax,
}


@pytest.mark.parametrize("case", params("tax"))
def test_tax_case(case: dict[str, Any]) -> None:
    ADAPTERS[case["id"]](case["input"], case["expected"])
