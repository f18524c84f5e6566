"""Money: currencies and exponents, explicit rounding, allocation, refusing floats."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.money import (
    CURRENCY_EXPONENTS,
    D,
    Money,
    RoundingMode,
    allocate,
    currency,
    quantize,
    round_to_minor,
)


def test_exponents_of_active_currencies() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    assert {c: currency(c).exponent for c in ("JPY", "USD", "KWD", "BHD", "CLF", "eur")} == {
        "JPY": 0,
        "USD": 2,
        "KWD": 3,
        "BHD": 3,
        "CLF": 4,
        "eur": 2,
    }
    with pytest.raises(RatecardError) as info:
        currency("XXX")
    assert info.value.code is ErrorCode.UNKNOWN_CURRENCY


def test_floats_are_refused() -> None:
    for bad in (0.1, True):
        with pytest.raises(RatecardError) as info:
            D(bad)  # type: ignore[arg-type]
        assert info.value.code in (ErrorCode.FLOAT_NOT_ALLOWED,)
    for bad_text in ("abc", "NaN", "Infinity"):
        with pytest.raises(RatecardError):
            D(bad_text)
    assert D(" 0.000125 ") == Decimal("0.000125")


def test_money_arithmetic_checks_currency() -> None:
    usd, eur = currency("USD"), currency("EUR")
    assert Money(150, usd) + Money(25, usd) == Money(175, usd)
    assert str(-Money(5484, usd)) == "-54.84 USD"
    with pytest.raises(RatecardError) as info:
        _ = Money(1, usd) + Money(1, eur)
    assert info.value.code is ErrorCode.CURRENCY_MISMATCH


def test_parse_refuses_more_places_than_the_currency() -> None:
    assert Money.parse("5.124", currency("KWD")).amount_minor == 5124
    with pytest.raises(RatecardError):
        Money.parse("10.001", currency("USD"))
    with pytest.raises(RatecardError):
        Money.parse("1.5", currency("JPY"))


@pytest.mark.parametrize(
    "mode, expected",
    [
        (RoundingMode.HALF_UP, ["3", "-3", "2", "-2"]),
        (RoundingMode.HALF_EVEN, ["2", "-2", "2", "-2"]),
        (RoundingMode.HALF_DOWN, ["2", "-2", "2", "-2"]),
        (RoundingMode.UP, ["3", "-3", "3", "-3"]),
        (RoundingMode.DOWN, ["2", "-2", "2", "-2"]),
        (RoundingMode.CEILING, ["3", "-2", "3", "-2"]),
        (RoundingMode.FLOOR, ["2", "-3", "2", "-3"]),
    ],
)
def test_rounding_modes_on_decimals_and_fractions(mode: RoundingMode, expected: list[str]) -> None:
    values: list[Decimal | Fraction] = [D("2.5"), D("-2.5"), Fraction(7, 3), Fraction(-7, 3)]
    assert [str(quantize(v, 0, mode)) for v in values] == expected


@given(
    numerator=st.integers(min_value=-(10**12), max_value=10**12),
    denominator=st.integers(min_value=1, max_value=10**6),
    places=st.integers(min_value=0, max_value=4),
    mode=st.sampled_from(list(RoundingMode)),
)
def test_fraction_rounding_agrees_with_decimal(
    numerator: int, denominator: int, places: int, mode: RoundingMode
) -> None:
    """Exact Fraction rounding matches Decimal rounding of the exact (terminating) value."""
    exact = Fraction(numerator, denominator)
    scaled = Decimal(numerator * 10**30 // denominator).scaleb(-30)
    if Fraction(scaled) != exact:  # non-terminating: compare with a value strictly inside
        return
    assert quantize(exact, places, mode) == quantize(scaled, places, mode)


@given(
    total=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20),
)
def test_allocations_sum_to_the_total(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    weight_sum = sum(weights)
    if weight_sum:
        for part, weight in zip(parts, weights, strict=True):
            assert abs(part - Fraction(total * weight, weight_sum)) < 1


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["JPY", "USD", "KWD"]))
def test_minor_units_round_trip(minor: int, code: str) -> None:
    cur = currency(code)
    money = Money(minor, cur)
    assert round_to_minor(money.to_decimal(), cur, RoundingMode.HALF_EVEN) == minor
    assert Money.parse(money.format(), cur) == money
