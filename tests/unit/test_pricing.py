"""Charge models: one example per model, the conventions, properties, and validation paths."""

from __future__ import annotations

import doctest
from decimal import Decimal as Dec

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ratecard.core.pricing as pricing
from ratecard.core.catalog import ChargeModel, PriceSpec, QuantityRounding, Tier, Transform
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.pricing import (
    Usage,
    flat,
    graduated,
    graduated_percentage,
    package,
    per_unit,
    percentage,
    quantity,
    rate,
    staircase,
    validate_price,
    validation,
    values,
    volume,
)

STRIPE = (Tier(Dec(5), Dec(5), Dec(10)), Tier(Dec(10), Dec(4), Dec(20)), Tier(None, Dec(3)))
FIVE_TIERS = (
    Tier(Dec(1000), Dec("0.05"), Dec(1)),
    Tier(Dec(10000), Dec("0.04")),
    Tier(Dec(100000), Dec("0.03"), Dec(2)),
    Tier(Dec(1000000), Dec("0.02")),
    Tier(None, Dec("0.01")),
)

quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)


def amount(model: ChargeModel, price: PriceSpec, q: str | int, *events: str) -> Dec:
    assert validate_price(model, price, "p") == []
    rating = rate(model, price, Usage(Dec(q), tuple(Dec(e) for e in events)))
    assert sum((i.amount for i in rating.breakdown), Dec(0)) == rating.amount
    return rating.amount


MODULES = (pricing, flat, graduated, graduated_percentage, package, per_unit, percentage)
MODULES += (quantity, staircase, validation, values, volume)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_flat_ignores_quantity() -> None:
    assert amount(ChargeModel.FLAT, PriceSpec(amount=Dec("30")), 9) == Dec(30)


def test_per_unit_keeps_sub_cent_prices_exact() -> None:
    price = PriceSpec(unit_price=Dec("0.000125"))
    assert amount(ChargeModel.PER_UNIT, price, 1234567) == Dec("154.320875")


def test_graduated_first_tier_flat_fee_applies_at_zero() -> None:
    assert amount(ChargeModel.GRADUATED, PriceSpec(tiers=STRIPE), 0) == Dec(10)
    assert amount(ChargeModel.GRADUATED, PriceSpec(tiers=STRIPE), 6) == Dec(25 + 10 + 4 + 20)


def test_volume_prices_all_units_at_the_final_tier_with_its_flat_fee() -> None:
    assert amount(ChargeModel.VOLUME, PriceSpec(tiers=STRIPE), 5) == Dec(35)
    assert amount(ChargeModel.VOLUME, PriceSpec(tiers=STRIPE), 6) == Dec(44)
    assert amount(ChargeModel.VOLUME, PriceSpec(tiers=STRIPE), 0) == Dec(10)


def test_package_rounds_up_or_down() -> None:
    up = PriceSpec(amount=Dec(5), package_size=Dec(100))
    down = PriceSpec(amount=Dec(5), package_size=Dec(100), package_rounding=QuantityRounding.DOWN)
    assert amount(ChargeModel.PACKAGE, up, 101) == Dec(10)
    assert amount(ChargeModel.PACKAGE, down, 199) == Dec(5)


def test_staircase_charges_the_band_and_refuses_above_a_bounded_last_band() -> None:
    bands = PriceSpec(tiers=(Tier(Dec(10), flat_fee=Dec(49)), Tier(Dec(50), flat_fee=Dec(99))))
    assert amount(ChargeModel.STAIRCASE, bands, 10) == Dec(49)
    assert amount(ChargeModel.STAIRCASE, bands, 11) == Dec(99)
    with pytest.raises(RatecardError) as info:
        rate(ChargeModel.STAIRCASE, bands, Usage(Dec(51)))
    assert info.value.code is ErrorCode.QUANTITY_ABOVE_LAST_TIER


def test_percentage_free_events_stop_at_the_amount_allowance() -> None:
    price = PriceSpec(rate=Dec(1), free_amount=Dec(100))
    # 60 is free; 60 + 50 passes 100, so the second event and every later one is charged.
    assert percentage.event_charges(price, (Dec(60), Dec(50), Dec(10))) == (
        Dec(0),
        Dec("0.5"),
        Dec("0.1"),
    )


def test_percentage_min_and_max_apply_per_event_to_rate_plus_fixed_fee() -> None:
    price = PriceSpec(
        rate=Dec(2), fixed_fee_per_event=Dec("0.30"), min_per_event=Dec(1), max_per_event=Dec(5)
    )
    assert amount(ChargeModel.PERCENTAGE, price, 1010, "10", "1000") == Dec(1 + 5)


def test_percentage_refuses_per_event_options_without_events() -> None:
    price = PriceSpec(rate=Dec(2), fixed_fee_per_event=Dec("0.30"))
    with pytest.raises(RatecardError):
        rate(ChargeModel.PERCENTAGE, price, Usage(Dec(10)))


def test_graduated_percentage_charges_nothing_at_zero() -> None:
    price = PriceSpec(tiers=(Tier(Dec(10), flat_fee=Dec(2), rate=Dec(1)), Tier(None, rate=Dec(2))))
    assert amount(ChargeModel.GRADUATED_PERCENTAGE, price, 0) == Dec(0)
    assert amount(ChargeModel.GRADUATED_PERCENTAGE, price, 20) == Dec("2.3")


def test_transform_then_free_units() -> None:
    price = PriceSpec(
        unit_price=Dec(10), transform=Transform(Dec(60), QuantityRounding.UP), free_units=Dec(1)
    )
    rating = rate(ChargeModel.PER_UNIT, price, Usage(Dec(150)))
    assert (rating.billed_quantity, rating.amount) == (Dec(2), Dec(20))


@pytest.mark.parametrize(
    ("rounding", "billed"),
    [(QuantityRounding.UP, 3), (QuantityRounding.DOWN, 2), (QuantityRounding.NEAREST, 3)],
)
def test_transform_roundings(rounding: QuantityRounding, billed: int) -> None:
    assert quantity.apply_transform(Dec(150), Transform(Dec(60), rounding)) == Dec(billed)


def test_minimum_true_up_and_maximum_cap_are_breakdown_items() -> None:
    low = rate(
        ChargeModel.PER_UNIT, PriceSpec(unit_price=Dec(1), minimum_amount=Dec(10)), Usage(Dec(4))
    )
    assert low.amount == Dec(10)
    assert (low.breakdown[-1].description, low.breakdown[-1].amount) == ("minimum true-up", Dec(6))
    high = rate(
        ChargeModel.PER_UNIT, PriceSpec(unit_price=Dec(1), maximum_amount=Dec(10)), Usage(Dec(14))
    )
    assert high.amount == Dec(10)
    assert (high.breakdown[-1].description, high.breakdown[-1].amount) == ("maximum cap", Dec(-4))


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(RatecardError):
        rate(ChargeModel.PER_UNIT, PriceSpec(unit_price=Dec(1)), Usage(Dec(-1)))


@given(quantities, quantities)
def test_graduated_cost_never_decreases(a: Dec, b: Dec) -> None:
    low, high = sorted((a, b))
    price = PriceSpec(tiers=FIVE_TIERS)
    assert amount(ChargeModel.GRADUATED, price, str(low)) <= amount(
        ChargeModel.GRADUATED, price, str(high)
    )


@given(st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False))
def test_volume_and_graduated_agree_on_the_first_tier(q: Dec) -> None:
    price = PriceSpec(tiers=FIVE_TIERS)
    assert amount(ChargeModel.GRADUATED, price, str(q)) == amount(ChargeModel.VOLUME, price, str(q))


@given(quantities, st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False))
def test_free_units_never_raise_the_amount_and_keep_it_non_negative(q: Dec, free: Dec) -> None:
    plain = PriceSpec(tiers=FIVE_TIERS)
    with_free = PriceSpec(tiers=FIVE_TIERS, free_units=free)
    charged = amount(ChargeModel.GRADUATED, with_free, str(q))
    assert Dec(0) <= charged <= amount(ChargeModel.GRADUATED, plain, str(q))


@given(
    quantities,
    st.decimals(min_value=0, max_value=500, places=2, allow_nan=False),
    st.decimals(min_value=0, max_value=500, places=2, allow_nan=False),
)
def test_bounds_hold(q: Dec, a: Dec, b: Dec) -> None:
    minimum, maximum = sorted((a, b))
    price = PriceSpec(tiers=FIVE_TIERS, minimum_amount=minimum, maximum_amount=maximum)
    assert minimum <= amount(ChargeModel.GRADUATED, price, str(q)) <= maximum


@given(st.lists(st.decimals(min_value=0, max_value=20000, places=2, allow_nan=False), max_size=8))
def test_transaction_amounts_sum_to_the_period_cost(values_: list[Dec]) -> None:
    price = PriceSpec(
        tiers=(Tier(Dec(1000), flat_fee=Dec(200), rate=Dec(1)), Tier(None, rate=Dec("0.5")))
    )
    total = sum(values_, Dec(0))
    deltas = graduated_percentage.transaction_amounts(price, values_)
    assert sum(deltas, Dec(0)) == graduated_percentage.cumulative_cost(price, total)
    assert all(d >= 0 for d in deltas)


def fields(model: ChargeModel, price: PriceSpec) -> set[tuple[str | None, ErrorCode]]:
    return {(p.field, p.code) for p in validate_price(model, price, "plan.charges[2].price")}


def test_validation_reports_every_tier_problem_with_its_field() -> None:
    price = PriceSpec(
        tiers=(
            Tier(None, Dec(1)),
            Tier(Dec(5), Dec("-1")),
            Tier(Dec(5), Dec(1), flat_fee=Dec("0.0000000000001")),
        )
    )
    where = "plan.charges[2].price.tiers"
    assert fields(ChargeModel.GRADUATED, price) == {
        (f"{where}[0].up_to", ErrorCode.INVALID_VALUE),
        (f"{where}[1].unit_price", ErrorCode.INVALID_VALUE),
        (f"{where}[2].up_to", ErrorCode.TIERS_NOT_CONTIGUOUS),
        (f"{where}[2].up_to", ErrorCode.INVALID_VALUE),  # the last tier must be unbounded
        (f"{where}[2].flat_fee", ErrorCode.INVALID_VALUE),  # more than 12 places
    }


@pytest.mark.parametrize(
    ("model", "price", "expected"),
    [
        (ChargeModel.FLAT, PriceSpec(), {("amount", ErrorCode.MISSING_FIELD)}),
        (ChargeModel.PER_UNIT, PriceSpec(), {("unit_price", ErrorCode.MISSING_FIELD)}),
        (ChargeModel.GRADUATED, PriceSpec(), {("tiers", ErrorCode.MISSING_FIELD)}),
        (
            ChargeModel.PACKAGE,
            PriceSpec(amount=Dec(5), package_size=Dec(0)),
            {("package_size", ErrorCode.INVALID_VALUE)},
        ),
        (
            ChargeModel.PERCENTAGE,
            PriceSpec(rate=Dec(1), min_per_event=Dec(5), max_per_event=Dec(2), free_units=Dec(1)),
            {("max_per_event", ErrorCode.INVALID_VALUE), ("free_units", ErrorCode.NOT_APPLICABLE)},
        ),
        (
            ChargeModel.PER_UNIT,
            PriceSpec(unit_price=Dec(1), amount=Dec(3), minimum_amount=Dec(-1)),
            {("amount", ErrorCode.NOT_APPLICABLE), ("minimum_amount", ErrorCode.INVALID_VALUE)},
        ),
        (
            ChargeModel.STAIRCASE,
            PriceSpec(tiers=(Tier(Dec(10), unit_price=Dec(1), flat_fee=Dec(5)),)),
            {("tiers[0].unit_price", ErrorCode.NOT_APPLICABLE)},
        ),
    ],
)
def test_validation_names_the_field(
    model: ChargeModel, price: PriceSpec, expected: set[tuple[str, ErrorCode]]
) -> None:
    assert fields(model, price) == {(f"plan.charges[2].price.{f}", c) for f, c in expected}


def test_every_model_is_registered() -> None:
    assert set(pricing.MODELS) == set(ChargeModel)
