"""Package: a price per package of `package_size` units, started packages rounded up (or down).

Worked example — Lago's 5.00 per 100 units with the first 100 free: 201 units leave 101 priced
units, two started packages, 10.00::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import PriceSpec
    >>> from ratecard.core.pricing import rate
    >>> from ratecard.core.catalog import ChargeModel
    >>> price = PriceSpec(amount=Dec(5), package_size=Dec(100), free_units=Dec(100))
    >>> rate(ChargeModel.PACKAGE, price, Usage(Dec(201))).amount
    Decimal('10')

Free units come off first (in `rate()`); `billed_quantity` is the number of packages.
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import PriceSpec, Transform
from ratecard.core.pricing.quantity import apply_transform
from ratecard.core.pricing.values import EXACT, BreakdownItem, Rating, Usage


def rate_package(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    size, amount_per_package = price.package_size, price.amount
    assert size is not None and amount_per_package is not None, "validate_price first"
    packages = apply_transform(quantity, Transform(size, price.package_rounding))
    amount = EXACT.multiply(packages, amount_per_package)
    item = BreakdownItem(f"packages of {size}", packages, amount_per_package, amount)
    return Rating(amount, packages, (item,))
