"""Flat: one amount per period, whatever the quantity.

>>> from decimal import Decimal
>>> from ratecard.core.catalog import PriceSpec
>>> rate_flat(PriceSpec(amount=Decimal("30")), Decimal(7), Usage(Decimal(7))).amount
Decimal('30')
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import PriceSpec
from ratecard.core.pricing.values import ONE, BreakdownItem, Rating, Usage


def rate_flat(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    amount = price.amount
    assert amount is not None, "flat needs amount (validate_price)"
    return Rating(amount, ONE, (BreakdownItem("flat fee", ONE, amount, amount),))
