"""Worked rounding cases (tests/data/cases/rounding_money.json) through core money and tax."""

from __future__ import annotations

from typing import Any

import pytest

from ratecard.core.money import D, Money, RoundingMode, currency, quantize
from ratecard.core.tax import TaxRate, TaxRounding, round_line, stripe_amount_minor, tax_lines
from tests.cases import params

HALF_UP = RoundingMode.HALF_UP


def _modes(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    for mode_name in inp["modes"]:
        mode = RoundingMode[mode_name]
        got = [quantize(D(v), inp["places"], mode) for v in inp["inputs"]]
        assert got == [D(e) for e in exp[mode_name]], mode_name


def _half_up_cents(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    got = [round_line(D(v), currency("USD"), HALF_UP, minimum_charge=False) for v in inp["values"]]
    assert [Money(g, currency("USD")).to_decimal() for g in got] == [D(e) for e in exp["rounded"]]


def _penny_floor(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    got = [round_line(D(v), currency("USD"), HALF_UP, minimum_charge=True) for v in inp["values"]]
    assert [Money(g, currency("USD")).to_decimal() for g in got] == [D(e) for e in exp["rounded"]]


def _line_tax(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    cur = currency("USD")
    amounts = [Money.parse(line["amount"], cur) for line in inp["lines"]]
    rates = [
        TaxRate(f"T{i}", "", D(line["tax_rate_percent"])) for i, line in enumerate(inp["lines"])
    ]
    taxes = tax_lines(amounts, rates, TaxRounding.LINE, HALF_UP)
    assert [t.to_decimal() for t in taxes.taxes] == [D(e) for e in exp["line_tax"]]
    assert taxes.total.to_decimal() == D(exp["total_tax"])
    subtotal = sum(a.amount_minor for a in amounts)
    assert Money(subtotal, cur).to_decimal() == D(exp["subtotal"])
    assert Money(subtotal, cur).to_decimal() + taxes.total.to_decimal() == D(exp["total"])


def _line_vs_invoice(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    cur = currency(inp["currency"])
    amounts = [Money.parse(line["amount"], cur) for line in inp["lines"]]
    rates = [TaxRate("VAT", "", D(inp["tax_rate_percent"]))] * len(amounts)
    line = tax_lines(amounts, rates, TaxRounding.LINE, HALF_UP)
    invoice = tax_lines(amounts, rates, TaxRounding.INVOICE, HALF_UP)
    assert quantize(line.exact[0] / 100, 3, HALF_UP) == D(exp["line_tax_unrounded"])
    assert line.total.to_decimal() == D(exp["line_level_total_tax"])
    assert invoice.total.to_decimal() == D(exp["invoice_level_total_tax"])


def _exponents(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    assert {c: currency(c).exponent for c in inp["currencies"]} == exp["exponents"]


def _stripe_minor(inp: dict[str, Any], exp: dict[str, Any]) -> None:
    charges = [Money.parse(c["amount"], currency(c["currency"])) for c in inp["charges"]]
    assert [c.currency.exponent for c in charges] == [c["exponent"] for c in inp["charges"]]
    assert [c.amount_minor for c in charges] == exp["minor_units"]
    kwd = next(c for c in charges if c.currency.code == "KWD")
    assert stripe_amount_minor(kwd, HALF_UP) == exp["kwd_stripe_nearest_ten"]


ADAPTERS = {
    "RM-JDK-ROUNDINGMODE-HALF-UP": _modes,
    "RM-JDK-ROUNDINGMODE-DIRECTED": _modes,
    "RM-STRIPE-FEE-HALF-UP": _half_up_cents,
    "RM-WAFEQ-LINE-TAX-HALF-UP": _line_tax,
    "RM-CLOUDCART-LINE-VS-INVOICE": _line_vs_invoice,
    "RM-COMPUTENEXT-PENNY-FLOOR": _penny_floor,
    "RM-CURRENCY-EXPONENTS": _exponents,
    "RM-STRIPE-ZERO-AND-THREE-DECIMAL": _stripe_minor,
}


@pytest.mark.parametrize("case", params("rounding_money"))
def test_rounding_money_case(case: dict[str, Any]) -> None:
    ADAPTERS[case["id"]](case["input"], case["expected"])
