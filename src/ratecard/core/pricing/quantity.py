"""From the metered quantity to the quantity a model prices: transform, then free units.

Worked example — a car rented 150 minutes, billed per started hour, first hour free::

    >>> from decimal import Decimal
    >>> from ratecard.core.catalog import QuantityRounding, Transform
    >>> hours = apply_transform(Decimal(150), Transform(Decimal(60), QuantityRounding.UP))
    >>> hours
    Decimal('3')
    >>> apply_free_units(hours, Decimal(1))
    Decimal('2')

Also here: `tier_index`, the tier that holds a quantity (`up_to` inclusive, a tier holds the units
above the previous `up_to`), shared by the volume and staircase models.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from ratecard.core.catalog import QuantityRounding, Tier, Transform
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.money import RoundingMode, quantize
from ratecard.core.pricing.values import ZERO

# Quantities are never negative, so "up" is the ceiling and "nearest" is half-up.
_TRANSFORM_MODES = {
    QuantityRounding.UP: RoundingMode.CEILING,
    QuantityRounding.DOWN: RoundingMode.FLOOR,
    QuantityRounding.NEAREST: RoundingMode.HALF_UP,
}


def apply_transform(quantity: Decimal, transform: Transform) -> Decimal:
    """Divide by `transform.divide_by` and round to a whole number with its rounding."""
    ratio = Fraction(quantity) / Fraction(transform.divide_by)
    return quantize(ratio, 0, _TRANSFORM_MODES[transform.rounding])


def apply_free_units(quantity: Decimal, free_units: Decimal) -> Decimal:
    """The quantity left after `free_units` are taken off, never below zero."""
    assert free_units >= ZERO, free_units
    remaining = quantity - free_units
    return remaining if remaining > ZERO else ZERO


def priced_quantity(quantity: Decimal, transform: Transform | None, free_units: Decimal) -> Decimal:
    """Transform first, then free units, as `rate()` does."""
    if quantity < ZERO:
        raise RatecardError(
            f"quantity must not be negative: {quantity}", code=ErrorCode.INVALID_VALUE
        )
    if transform is not None:
        quantity = apply_transform(quantity, transform)
    if free_units:
        quantity = apply_free_units(quantity, free_units)
    return quantity


def tier_index(tiers: tuple[Tier, ...], quantity: Decimal) -> int:
    """Index of the tier that holds `quantity`; zero falls in the first tier.

    A quantity above a bounded last tier is an error the caller can show (staircase tables
    may end bounded, as Kill Bill capacity tiers do).
    """
    for index, tier in enumerate(tiers):
        if tier.up_to is None or quantity <= tier.up_to:
            return index
    raise RatecardError(
        f"quantity {quantity} is above the last tier (up to {tiers[-1].up_to})",
        code=ErrorCode.QUANTITY_ABOVE_LAST_TIER,
    )
