"""Charge models: one small pure function per model, in a registry, behind `rate()`.

Worked example — Stripe's graduated table for fonts (1–5 at 7.00, 6–10 at 6.50, then 6.00)::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import ChargeModel, PriceSpec, Tier
    >>> price = PriceSpec(tiers=(Tier(Dec(5), Dec(7)), Tier(Dec(10), Dec("6.5")),
    ...                          Tier(None, Dec(6))))
    >>> validate_price(ChargeModel.GRADUATED, price, "charges[0].price")
    []
    >>> rating = rate(ChargeModel.GRADUATED, price, Usage(Dec(6)))
    >>> rating.amount
    Decimal('41.5')
    >>> [(item.description, item.amount) for item in rating.breakdown]
    [('tier 1', Decimal('35')), ('tier 2', Decimal('6.5'))]

`rate()` applies, in order: the transform (e.g. minutes to started hours), free units, the model,
then the charge's per-period `minimum_amount` (a true-up, shown as its own breakdown item) and
`maximum_amount` (a cap, also shown). Amounts stay exact, unrounded, in major units: invoice
assembly rounds each line once. `rate()` trusts its price: validate it once with
`validate_price()`, which returns every problem at once, each naming its field.
"""

from __future__ import annotations

from decimal import Decimal

from ratecard.core.catalog import ChargeModel, PriceSpec
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.pricing.flat import rate_flat
from ratecard.core.pricing.graduated import rate_graduated
from ratecard.core.pricing.graduated_percentage import rate_graduated_percentage
from ratecard.core.pricing.package import rate_package
from ratecard.core.pricing.per_unit import rate_per_unit
from ratecard.core.pricing.percentage import rate_percentage
from ratecard.core.pricing.quantity import priced_quantity
from ratecard.core.pricing.staircase import rate_staircase
from ratecard.core.pricing.validation import validate_price
from ratecard.core.pricing.values import (
    EXACT,
    ONE,
    ZERO,
    BreakdownItem,
    ModelFunction,
    Rating,
    Usage,
)
from ratecard.core.pricing.volume import rate_volume

__all__ = [
    "MODELS",
    "BreakdownItem",
    "Rating",
    "Usage",
    "apply_bounds",
    "rate",
    "validate_price",
]

#: The registry: a new model is a new file, an entry here, and its validation rules.
MODELS: dict[ChargeModel, ModelFunction] = {
    ChargeModel.FLAT: rate_flat,
    ChargeModel.PER_UNIT: rate_per_unit,
    ChargeModel.GRADUATED: rate_graduated,
    ChargeModel.VOLUME: rate_volume,
    ChargeModel.PACKAGE: rate_package,
    ChargeModel.STAIRCASE: rate_staircase,
    ChargeModel.PERCENTAGE: rate_percentage,
    ChargeModel.GRADUATED_PERCENTAGE: rate_graduated_percentage,
}
assert set(MODELS) == set(ChargeModel), "every charge model needs a rating function"


def rate(model: ChargeModel, price: PriceSpec, usage: Usage) -> Rating:
    """Rate one charge for one period. The price must have passed `validate_price()`."""
    quantity = usage.quantity
    if quantity < ZERO:
        raise RatecardError(
            f"quantity must not be negative: {quantity}", code=ErrorCode.INVALID_VALUE
        )
    if price.transform is not None or price.free_units:
        quantity = priced_quantity(quantity, price.transform, price.free_units)
    try:
        function = MODELS[model]
    except KeyError:
        raise RatecardError(
            f"unknown charge model {model!r}", code=ErrorCode.UNKNOWN_CHARGE_MODEL
        ) from None
    rating = function(price, quantity, usage)
    if price.minimum_amount is not None or price.maximum_amount is not None:
        rating = apply_bounds(rating, price.minimum_amount, price.maximum_amount)
    return rating


def apply_bounds(rating: Rating, minimum: Decimal | None, maximum: Decimal | None) -> Rating:
    """Raise the amount to `minimum` (a true-up item) or cap it at `maximum` (a cap item)."""
    if minimum is not None and rating.amount < minimum:
        true_up = EXACT.subtract(minimum, rating.amount)
        item = BreakdownItem("minimum true-up", ONE, true_up, true_up)
        return Rating(minimum, rating.billed_quantity, (*rating.breakdown, item))
    if maximum is not None and rating.amount > maximum:
        cap = EXACT.subtract(maximum, rating.amount)
        item = BreakdownItem("maximum cap", ONE, cap, cap)
        return Rating(maximum, rating.billed_quantity, (*rating.breakdown, item))
    return rating
