"""Staircase (step): one flat price for the band that holds the quantity.

Worked example — up to 10 users 49.00, up to 50 users 99.00, above 199.00; 12 users pay 99.00::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import PriceSpec, Tier
    >>> price = PriceSpec(tiers=(Tier(Dec(10), flat_fee=Dec("49.00")),
    ...                          Tier(Dec(50), flat_fee=Dec("99.00")),
    ...                          Tier(None, flat_fee=Dec("199.00"))))
    >>> rate_staircase(price, Dec(12), Usage(Dec(12))).amount
    Decimal('99.00')

The band's price is `Tier.flat_fee`. A table may end with a bounded band (Kill Bill capacity
tiers); a quantity above it raises `quantity_above_last_tier`.
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import PriceSpec
from ratecard.core.pricing.quantity import tier_index
from ratecard.core.pricing.values import ONE, BreakdownItem, Rating, Usage


def rate_staircase(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    number = tier_index(price.tiers, quantity) + 1
    fee = price.tiers[number - 1].flat_fee
    return Rating(fee, quantity, (BreakdownItem(f"band {number}", ONE, fee, fee),))
