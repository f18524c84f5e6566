"""Per unit: quantity times the unit price.

>>> from decimal import Decimal
>>> from ratecard.core.catalog import PriceSpec
>>> rate_per_unit(PriceSpec(unit_price=Decimal("5.00")), Decimal(6), Usage(Decimal(6))).amount
Decimal('30.00')
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import PriceSpec
from ratecard.core.pricing.values import EXACT, BreakdownItem, Rating, Usage


def rate_per_unit(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    unit_price = price.unit_price
    assert unit_price is not None, "per_unit needs unit_price (validate_price)"
    amount = EXACT.multiply(quantity, unit_price)
    return Rating(amount, quantity, (BreakdownItem("per unit", quantity, unit_price, amount),))
