"""Volume: every unit is priced at the tier that holds the final quantity, plus its flat fee.

Worked example — Stripe's boundary: 0.50 up to 10,000 (inclusive), 0.40 above. The total drops
when one unit is added::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import PriceSpec, Tier
    >>> price = PriceSpec(tiers=(Tier(Dec(10000), Dec("0.50")), Tier(None, Dec("0.40"))))
    >>> rate_volume(price, Dec(10000), Usage(Dec(10000))).amount
    Decimal('5000.00')
    >>> rate_volume(price, Dec(10001), Usage(Dec(10001))).amount
    Decimal('4000.40')

Quantity 0 falls in the first tier, so its flat fee applies (Stripe's convention).
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import PriceSpec
from ratecard.core.pricing.quantity import tier_index
from ratecard.core.pricing.values import EXACT, ONE, BreakdownItem, Rating, Usage


def rate_volume(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    number = tier_index(price.tiers, quantity) + 1
    tier = price.tiers[number - 1]
    amount = EXACT.multiply(quantity, tier.unit_price)
    items = [BreakdownItem(f"tier {number}", quantity, tier.unit_price, amount)]
    if tier.flat_fee:
        items.append(BreakdownItem(f"tier {number} flat fee", ONE, tier.flat_fee, tier.flat_fee))
        amount = EXACT.add(amount, tier.flat_fee)
    return Rating(amount, quantity, tuple(items))
