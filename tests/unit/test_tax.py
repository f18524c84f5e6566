"""Tax math: examples and properties."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.money import D, Money, RoundingMode, currency
from ratecard.core.tax import (
    EU_MEMBER_STATES,
    TaxRate,
    TaxRounding,
    TaxTreatment,
    decide_vat,
    standard_rate,
    tax_amount,
    tax_lines,
)

EUR = currency("EUR")
HALF_UP = RoundingMode.HALF_UP
rates = st.decimals(min_value=0, max_value=30, places=1).map(lambda r: TaxRate("T", "t", r))
amounts = st.lists(st.integers(min_value=-10_000, max_value=1_000_000), min_size=1, max_size=12)


def test_inclusive_tax_is_carved_out_of_the_price() -> None:
    taxed = tax_amount(Money(60000, EUR), TaxRate("T", "t", D("10"), inclusive=True), HALF_UP)
    assert (taxed.net.amount_minor, taxed.tax.amount_minor, taxed.gross.amount_minor) == (
        54545,
        5455,
        60000,
    )


def test_rate_outside_0_to_100_is_refused() -> None:
    with pytest.raises(RatecardError):
        TaxRate("T", "t", D("101"))


@given(amounts, rates, st.sampled_from(list(TaxRounding)))
def test_line_taxes_sum_to_the_total(
    minor: list[int], rate: TaxRate, rounding: TaxRounding
) -> None:
    result = tax_lines([Money(m, EUR) for m in minor], [rate] * len(minor), rounding, HALF_UP)
    assert sum(t.amount_minor for t in result.taxes) == result.total.amount_minor
    for tax, exact in zip(result.taxes, result.exact, strict=True):
        assert abs(tax.amount_minor - exact) < 2  # never more than one cent off the exact tax


@given(amounts, rates)
def test_invoice_rounding_rounds_the_exact_sum_once(minor: list[int], rate: TaxRate) -> None:
    result = tax_lines(
        [Money(m, EUR) for m in minor], [rate] * len(minor), TaxRounding.INVOICE, HALF_UP
    )
    assert abs(result.total.amount_minor - sum(result.exact, Fraction(0))) <= Fraction(1, 2)


@given(st.integers(min_value=0, max_value=10**9), rates)
def test_inclusive_net_plus_tax_is_the_price(minor: int, rate: TaxRate) -> None:
    inclusive = TaxRate(rate.code, rate.name, rate.rate_percent, inclusive=True)
    taxed = tax_amount(Money(minor, EUR), inclusive, HALF_UP)
    assert taxed.net + taxed.tax == Money(minor, EUR) and taxed.tax.amount_minor >= 0


def test_untaxed_lines_have_zero_tax() -> None:
    result = tax_lines([Money(100, EUR)], [None], TaxRounding.INVOICE, HALF_UP)
    assert result.total.is_zero()


def test_standard_rates_follow_their_effective_dates() -> None:
    assert standard_rate("FI", date(2024, 8, 31)).rate_percent == D("24")
    assert standard_rate("FI", date(2024, 9, 1)).rate_percent == D("25.5")
    assert standard_rate("de", date(2025, 1, 1)).rate_percent == D("19")
    assert standard_rate("US", date(2025, 1, 1)).rate_percent == 0
    configured = {"US": TaxRate("US-NY", "New York sales tax", D("8.875"))}
    assert standard_rate("US", date(2025, 1, 1), configured).rate_percent == D("8.875")


def test_every_eu_member_has_a_rate() -> None:
    assert len(EU_MEMBER_STATES) == 27
    for country in EU_MEMBER_STATES:
        assert standard_rate(country, date(2025, 9, 1)).rate_percent > 0


def test_unknown_country_is_an_expected_failure() -> None:
    with pytest.raises(RatecardError) as err:
        standard_rate("ZZ", date(2025, 1, 1))
    assert err.value.code is ErrorCode.UNKNOWN_TAX_JURISDICTION


ON = date(2025, 3, 1)


def test_domestic_sale_uses_the_seller_rate() -> None:
    decision = decide_vat(seller_country="FR", buyer_country="FR", buyer_vat_id="FR1", on=ON)
    assert decision.treatment is TaxTreatment.DOMESTIC and decision.rate.rate_percent == 20


def test_eu_b2b_cross_border_is_reverse_charged() -> None:
    decision = decide_vat(seller_country="FR", buyer_country="DE", buyer_vat_id="DE123", on=ON)
    assert decision.treatment is TaxTreatment.REVERSE_CHARGE
    assert decision.rate.rate_percent == 0 and "Reverse charge" in decision.note


def test_eu_b2c_cross_border_uses_the_buyer_rate() -> None:
    decision = decide_vat(seller_country="FR", buyer_country="DE", buyer_vat_id=None, on=ON)
    assert decision.treatment is TaxTreatment.OSS and decision.rate.rate_percent == 19


@pytest.mark.parametrize("vat_id", [None, "US-EIN"])
def test_buyer_outside_the_eu_is_outside_scope(vat_id: str | None) -> None:
    decision = decide_vat(seller_country="FR", buyer_country="US", buyer_vat_id=vat_id, on=ON)
    assert decision.treatment is TaxTreatment.OUTSIDE_SCOPE and decision.rate.rate_percent == 0


def test_blank_vat_id_counts_as_a_consumer() -> None:
    decision = decide_vat(seller_country="FR", buyer_country="IT", buyer_vat_id="  ", on=ON)
    assert decision.treatment is TaxTreatment.OSS
