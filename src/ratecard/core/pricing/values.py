"""The values of rating: usage in, an unrounded `Rating` with its breakdown out.

Worked example — six fonts on Stripe's graduated table (5 at 7.00, then 6.50)::

    >>> from decimal import Decimal
    >>> rating = Rating(
    ...     amount=Decimal("41.5"),
    ...     billed_quantity=Decimal(6),
    ...     breakdown=(
    ...         BreakdownItem("tier 1", Decimal(5), Decimal(7), Decimal(35)),
    ...         BreakdownItem("tier 2", Decimal(1), Decimal("6.5"), Decimal("6.5")),
    ...     ),
    ... )
    >>> sum(item.amount for item in rating.breakdown) == rating.amount
    True

Amounts here are in major units and never rounded: invoice assembly rounds each line once.
`EXACT` is the decimal context every pricing model computes in; it traps `Inexact`, so a result
that would need rounding is a loud bug instead of a silent cent.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from ratecard.core.catalog import PriceSpec

#: 60 digits hold a 12-place price times an 18-digit quantity; anything inexact raises.
EXACT = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.FloatOperation,
        decimal.Inexact,
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
    ],
)
ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Usage:
    """What is being priced: the period's quantity and, for percentage models, each event's value.

    `event_values` are in time order; a percentage model prices them one by one (fixed fee,
    per-event min/max, free events) and ignores `quantity` when they are given.
    """

    quantity: Decimal
    event_values: tuple[Decimal, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakdownItem:
    """One explained part of a rating; `amount` is unrounded major units."""

    description: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Rating:
    """The unrounded amount of one charge for one period; the breakdown sums to `amount`."""

    amount: Decimal
    billed_quantity: Decimal
    breakdown: tuple[BreakdownItem, ...]


#: A charge model: (price, quantity after transform and free units, usage) -> rating.
ModelFunction = Callable[[PriceSpec, Decimal, Usage], Rating]
