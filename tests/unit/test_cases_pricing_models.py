"""Every worked case of tests/data/cases/pricing_models.json, through the real pricing core.

Each case is shaped after its reference (Stripe, Lago, Kill Bill); a small adapter per
`input.model` turns it into Ratecard's `PriceSpec` + `Usage`, validates the price and rates it.
Expected amounts written with cents ("5.00") are compared after rounding half-up to cents, as
invoice assembly would; all others are compared exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from ratecard.core.catalog import ChargeModel, PriceSpec, QuantityRounding, Tier, Transform
from ratecard.core.money import RoundingMode, quantize
from ratecard.core.pricing import Rating, Usage, rate, validate_price
from ratecard.core.pricing.graduated_percentage import transaction_amounts
from ratecard.core.pricing.percentage import event_charges
from tests.cases import params

Case = dict[str, Any]


def dec(value: object) -> Decimal:
    assert not isinstance(value, float)
    return Decimal(str(value)) if not isinstance(value, Decimal) else value


def assert_amount(actual: Decimal, expected: object) -> None:
    want = dec(expected)
    places = -int(want.as_tuple().exponent)
    if places == 2:  # a money amount as printed on an invoice
        actual = quantize(actual, 2, RoundingMode.HALF_UP)
    assert actual == want, f"{actual} != {want}"


def rated(model: ChargeModel, price: PriceSpec, usage: Usage) -> Rating:
    assert validate_price(model, price, "price") == []
    result = rate(model, price, usage)
    assert sum((item.amount for item in result.breakdown), Decimal(0)) == result.amount
    return result


def stripe_tiers(case: Case) -> tuple[ChargeModel, PriceSpec]:
    tiers = tuple(
        Tier(
            None if t["up_to"] is None else dec(t["up_to"]),
            unit_price=dec(t.get("unit", 0)),
            flat_fee=dec(t.get("flat", 0)),
        )
        for t in case["input"]["tiers"]
    )
    mode = case["input"]["tiers_mode"]
    return ChargeModel.GRADUATED if mode == "graduated" else ChargeModel.VOLUME, PriceSpec(
        tiers=tiers
    )


def lago_ranges(ranges: list[dict[str, Any]], *, percent: bool = False) -> tuple[Tier, ...]:
    def up_to(r: dict[str, Any]) -> Decimal | None:
        return None if r["to_value"] is None else dec(r["to_value"])

    if percent:
        return tuple(
            Tier(up_to(r), flat_fee=dec(r["flat_amount"]), rate=dec(r["rate"])) for r in ranges
        )
    return tuple(
        Tier(up_to(r), unit_price=dec(r["per_unit_amount"]), flat_fee=dec(r["flat_amount"]))
        for r in ranges
    )


def killbill_price(blocks: list[dict[str, Any]]) -> PriceSpec:
    """Kill Bill consumable tiers: blocks of `size` units, each tier holding `max_blocks`."""
    sizes = {dec(b["size"]) for b in blocks}
    assert len(sizes) == 1, "one block size per unit type"
    tiers, reached = [], Decimal(0)
    for block in blocks:
        if block["max_blocks"] is None:
            tiers.append(Tier(None, unit_price=dec(block["price"])))
        else:
            reached += dec(block["max_blocks"])
            tiers.append(Tier(reached, unit_price=dec(block["price"])))
    return PriceSpec(tiers=tuple(tiers), transform=Transform(sizes.pop(), QuantityRounding.UP))


def killbill_total(case: Case, policy: str) -> tuple[Decimal, dict[str, Decimal]]:
    model = {"ALL_TIER": ChargeModel.GRADUATED, "TOP_TIER": ChargeModel.VOLUME}[policy]
    per_unit = {
        unit: rated(model, killbill_price(blocks), Usage(dec(case["input"]["usage"][unit]))).amount
        for unit, blocks in case["input"]["tiers_by_unit"].items()
    }
    return sum(per_unit.values(), Decimal(0)), per_unit


def check_tiered(case: Case) -> None:
    model, price = stripe_tiers(case)
    inp, exp = case["input"], case["expected"]
    quantities = inp.get("quantities", [inp.get("quantity")])
    totals = exp.get("totals", [exp.get("total")])
    for quantity, total in zip(quantities, totals, strict=True):
        assert_amount(rated(model, price, Usage(dec(quantity))).amount, total)


def check_per_unit(case: Case) -> None:
    price = PriceSpec(unit_price=dec(case["input"]["unit_amount"]))
    for quantity, total in zip(
        case["input"]["quantities"], case["expected"]["totals"], strict=True
    ):
        assert_amount(rated(ChargeModel.PER_UNIT, price, Usage(dec(quantity))).amount, total)


def check_package(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    if "transform_quantity" in inp:  # Stripe: a per-package price through transform_quantity
        transform = inp["transform_quantity"]
        price = PriceSpec(
            amount=dec(inp["unit_amount"]),
            package_size=dec(transform["divide_by"]),
            package_rounding=QuantityRounding(transform["round"]),
        )
        result = rated(ChargeModel.PACKAGE, price, Usage(dec(inp["quantity"])))
        assert result.billed_quantity == dec(exp["billed_quantity"])
        assert_amount(result.amount, exp["total"])
        return
    price = PriceSpec(
        amount=dec(inp["amount"]),
        package_size=dec(inp["package_size"]),
        free_units=dec(inp.get("free_units", 0)),
    )
    assert_amount(rated(ChargeModel.PACKAGE, price, Usage(dec(inp["units"]))).amount, exp["amount"])


def check_lago_tiers(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    model = ChargeModel(inp["model"])
    price = PriceSpec(tiers=lago_ranges(inp["ranges"]))
    units = inp["units"] if isinstance(inp["units"], list) else [inp["units"]]
    amounts = exp["amounts"] if "amounts" in exp else [exp["amount"]]
    for quantity, amount in zip(units, amounts, strict=True):
        assert_amount(rated(model, price, Usage(dec(quantity))).amount, amount)


def check_percentage(case: Case) -> None:
    inp, exp = case["input"], case["expected"]

    def optional(name: str) -> Decimal | None:
        return None if inp.get(name) is None else dec(inp[name])

    price = PriceSpec(
        rate=dec(inp["rate"]),
        fixed_fee_per_event=optional("fixed_amount"),
        min_per_event=optional("per_transaction_min_amount"),
        max_per_event=optional("per_transaction_max_amount"),
        free_events=int(inp.get("free_units_per_events") or 0),
        free_amount=dec(inp.get("free_units_per_total_aggregation") or 0),
    )
    if "event_values" in inp:
        values = tuple(dec(v) for v in inp["event_values"])
        usage = Usage(sum(values, Decimal(0)), values)
    else:
        usage = Usage(dec(inp["units"]))
    result = rated(ChargeModel.PERCENTAGE, price, usage)
    assert_amount(result.amount, exp.get("amount", exp.get("total")))
    if "per_event_charges" in exp:
        charges = event_charges(price, usage.event_values)
        for actual, expected in zip(charges, exp["per_event_charges"], strict=True):
            assert_amount(actual, expected)


def check_graduated_percentage(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    price = PriceSpec(tiers=lago_ranges(inp["ranges"], percent=True))
    assert validate_price(ChargeModel.GRADUATED_PERCENTAGE, price, "price") == []
    values = tuple(dec(v) for v in inp["transactions"])
    amounts = transaction_amounts(price, values)
    for actual, expected in zip(amounts, exp["per_transaction_amounts"], strict=True):
        assert_amount(actual, expected)
    total = rated(ChargeModel.GRADUATED_PERCENTAGE, price, Usage(sum(values, Decimal(0))))
    assert_amount(total.amount, exp["period_total_in_arrears"])


def check_killbill_consumable(case: Case) -> None:
    exp = case["expected"]
    if "policy" in case["input"]:
        total, per_unit = killbill_total(case, case["input"]["policy"])
        for unit, amount in exp["per_unit"].items():
            assert_amount(per_unit[unit], amount)
        assert_amount(total, exp["total"])
        return
    for policy in ("ALL_TIER", "TOP_TIER"):
        assert_amount(killbill_total(case, policy)[0], exp[f"{policy}_total"])


def check_flat_plus_usage(case: Case) -> None:
    inp = case["input"]
    flat = PriceSpec(amount=dec(inp["flat_fee"]))
    ((_, blocks),) = inp["tiers_by_unit"].items()
    usage_price = killbill_price(blocks)
    for usage, total in zip(
        inp["usage_per_period"], case["expected"]["period_totals"], strict=True
    ):
        fee = rated(ChargeModel.FLAT, flat, Usage(Decimal(1))).amount
        consumption = rated(ChargeModel.VOLUME, usage_price, Usage(dec(usage))).amount
        assert_amount(fee + consumption, total)


def check_step_multi_unit(case: Case) -> None:
    """Kill Bill capacity: each unit's peak picks its band; the highest band is charged."""
    inp = case["input"]
    amounts = []
    for unit, peak in inp["peaks"].items():
        bands = tuple(Tier(dec(t["limits"][unit]), flat_fee=dec(t["price"])) for t in inp["tiers"])
        amounts.append(
            rated(ChargeModel.STAIRCASE, PriceSpec(tiers=bands), Usage(dec(peak))).amount
        )
    assert_amount(max(amounts), case["expected"]["amount"])


def check_spending_minimum(case: Case) -> None:
    inp, exp = case["input"], case["expected"]
    price = PriceSpec(amount=dec(inp["charge_amount"]), minimum_amount=dec(inp["minimum"]))
    result = rated(ChargeModel.FLAT, price, Usage(Decimal(1)))
    (true_up,) = [item for item in result.breakdown if item.description == "minimum true-up"]
    assert_amount(true_up.amount, exp["true_up"])
    assert_amount(result.amount, exp["total_for_charge"])


ADAPTERS: dict[str, Callable[[Case], None]] = {
    "per_unit": check_per_unit,
    "tiered": check_tiered,
    "package": check_package,
    "graduated": check_lago_tiers,
    "volume": check_lago_tiers,
    "percentage": check_percentage,
    "graduated_percentage": check_graduated_percentage,
    "killbill_consumable": check_killbill_consumable,
    "flat_plus_usage": check_flat_plus_usage,
    "step_multi_unit": check_step_multi_unit,
    "spending_minimum": check_spending_minimum,
}


@pytest.mark.parametrize("case", params("pricing_models"))
def test_case(case: Case) -> None:
    ADAPTERS[case["input"]["model"]](case)
