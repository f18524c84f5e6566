"""Graduated (tiered): each unit is priced at the tier it falls in; tier totals are summed.

Worked example — Stripe's table (1–5 at 5 + 10 flat, 6–10 at 4 + 20 flat, 11–15 at 3 + 30 flat,
...), quantity 12: 5×5 + 10 + 5×4 + 20 + 2×3 + 30 = 111::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import PriceSpec, Tier
    >>> tiers = (Tier(Dec(5), Dec(5), Dec(10)), Tier(Dec(10), Dec(4), Dec(20)),
    ...          Tier(Dec(15), Dec(3), Dec(30)), Tier(None, Dec(1), Dec(50)))
    >>> rate_graduated(PriceSpec(tiers=tiers), Dec(12), Usage(Dec(12))).amount
    Decimal('111')

A tier's flat fee is charged when the tier is reached (holds at least part of a unit); the first
tier's flat fee applies even at quantity 0 (Stripe's convention). Decimal quantities work with
adjacent ranges: tiers up to 0.1 at 10 and up to 1 at 5 price 0.5 as 0.1×10 + 0.4×5 = 3.0.
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import PriceSpec, Tier
from ratecard.core.pricing.values import EXACT, ONE, ZERO, BreakdownItem, Rating, Usage

_multiply = EXACT.multiply
_add = EXACT.add
_subtract = EXACT.subtract
_divide = EXACT.divide
_HUNDRED = Decimal(100)
# Labels are built once: rating is a hot path.
_LABELS = {
    label: tuple((f"{label} {n}", f"{label} {n} flat fee") for n in range(1, 33))
    for label in ("tier", "band")
}


def walk_tiers(
    tiers: tuple[Tier, ...], quantity: Decimal, *, percent: bool, first_flat_at_zero: bool
) -> tuple[Decimal, list[BreakdownItem]]:
    """Sum each reached tier's units × its price per unit, plus its flat fee.

    The price per unit is `unit_price`, or `rate` / 100 when `percent` (graduated percentage).
    The last tier must be unbounded (validate_price).
    """
    total = ZERO
    items: list[BreakdownItem] = []
    lower = ZERO
    labels = _LABELS["band" if percent else "tier"]
    for index, tier in enumerate(tiers):
        if quantity <= lower and (index or not first_flat_at_zero):
            break  # tier not reached
        unit_label, fee_label = labels[index] if index < len(labels) else _label(percent, index)
        upper = tier.up_to
        units = _subtract(quantity if upper is None or quantity < upper else upper, lower)
        if units > ZERO:
            unit_price = _divide(tier.rate, _HUNDRED) if percent else tier.unit_price
            amount = _multiply(units, unit_price)
            items.append(BreakdownItem(unit_label, units, unit_price, amount))
            total = _add(total, amount)
        flat_fee = tier.flat_fee
        if flat_fee:
            items.append(BreakdownItem(fee_label, ONE, flat_fee, flat_fee))
            total = _add(total, flat_fee)
        if upper is None:
            break
        lower = upper
    return total, items


def _label(percent: bool, index: int) -> tuple[str, str]:
    label = "band" if percent else "tier"
    return f"{label} {index + 1}", f"{label} {index + 1} flat fee"


def rate_graduated(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    total, items = walk_tiers(price.tiers, quantity, percent=False, first_flat_at_zero=True)
    return Rating(total, quantity, tuple(items))
