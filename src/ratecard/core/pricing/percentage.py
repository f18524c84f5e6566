"""Percentage: a percent of each event, a fixed fee per event, per-event min/max, free events.

Worked example — Lago's documentation: 1.2 %, 0.10 per event, the first 3 events or 500.00 free.
Transactions 200, 100, 100 are free; the fourth (50) is past the free event count and is fully
charged, 50 × 1.2 % + 0.10 = 0.70::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import PriceSpec
    >>> price = PriceSpec(rate=Dec("1.2"), fixed_fee_per_event=Dec("0.10"),
    ...                   free_events=3, free_amount=Dec(500))
    >>> event_charges(price, (Dec(200), Dec(100), Dec(100), Dec(50)))
    (Decimal('0'), Decimal('0'), Decimal('0'), Decimal('0.700'))

Conventions:
- the rate is a percent (1.2 means 1.2 %); the fixed fee is charged per paid event and
  `min_per_event` / `max_per_event` clamp rate part + fixed fee of each paid event;
- events are free, in time order, while BOTH allowances hold: at most `free_events` events
  (0 = no count limit) and a cumulative value of at most `free_amount` (0 = no amount limit);
  with both 0 nothing is free. The first event past either allowance, and every later one, is
  fully charged (no partial free event);
- without `event_values` the quantity is priced as one aggregate (rate only); per-event options
  then cannot apply and asking for them is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from ratecard.core.catalog import PriceSpec
from ratecard.core.errors import ErrorCode, RatecardError
from ratecard.core.pricing.values import (
    EXACT,
    HUNDRED,
    ZERO,
    BreakdownItem,
    Rating,
    Usage,
)


def free_event_count(price: PriceSpec, values: Sequence[Decimal]) -> int:
    """How many leading events are free under the free event count and free amount."""
    count_limit, amount_limit = price.free_events, price.free_amount
    if count_limit == 0 and amount_limit == ZERO:
        return 0
    cumulative = ZERO
    for index, value in enumerate(values):
        cumulative = EXACT.add(cumulative, value)
        if (count_limit and index >= count_limit) or (amount_limit and cumulative > amount_limit):
            return index
    return len(values)


def _clamp(charge: Decimal, price: PriceSpec) -> Decimal:
    if price.min_per_event is not None and charge < price.min_per_event:
        charge = price.min_per_event
    if price.max_per_event is not None and charge > price.max_per_event:
        charge = price.max_per_event
    return charge


def event_charges(price: PriceSpec, values: Sequence[Decimal]) -> tuple[Decimal, ...]:
    """The charge of each event, in order (free events charge zero)."""
    assert price.rate is not None, "percentage needs rate (validate_price)"
    fraction = EXACT.divide(price.rate, HUNDRED)
    fixed = price.fixed_fee_per_event or ZERO
    free = free_event_count(price, values)
    charges = [ZERO] * free
    for value in values[free:]:
        unclamped = EXACT.add(EXACT.multiply(value, fraction), fixed)
        charges.append(_clamp(unclamped, price))
    return tuple(charges)


def _has_event_options(price: PriceSpec) -> bool:
    return (
        price.fixed_fee_per_event is not None
        or price.min_per_event is not None
        or price.max_per_event is not None
        or price.free_events != 0
        or price.free_amount != ZERO
    )


def rate_percentage(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    assert price.rate is not None, "percentage needs rate (validate_price)"
    fraction = EXACT.divide(price.rate, HUNDRED)
    values = usage.event_values
    if not values:
        if quantity and _has_event_options(price):
            raise RatecardError(
                "per-event percentage options need the usage's event values",
                code=ErrorCode.INVALID_VALUE,
            )
        amount = EXACT.multiply(quantity, fraction)
        return Rating(amount, quantity, (BreakdownItem("percentage", quantity, fraction, amount),))
    return _rate_events(price, fraction, values)


def _rate_events(price: PriceSpec, fraction: Decimal, values: tuple[Decimal, ...]) -> Rating:
    free = free_event_count(price, values)
    charges = event_charges(price, values)
    paid_values = values[free:]
    base = sum(paid_values, ZERO)
    rate_part = EXACT.multiply(base, fraction)
    fixed = price.fixed_fee_per_event or ZERO
    fixed_part = EXACT.multiply(Decimal(len(paid_values)), fixed)
    total = sum(charges, ZERO)
    items = []
    if free:
        free_value = sum(values[:free], ZERO)
        items.append(BreakdownItem(f"{free} free events", free_value, ZERO, ZERO))
    items.append(BreakdownItem("percentage", base, fraction, rate_part))
    if fixed:
        items.append(
            BreakdownItem("fixed fee per event", Decimal(len(paid_values)), fixed, fixed_part)
        )
    adjustment = EXACT.subtract(total, EXACT.add(rate_part, fixed_part))
    if adjustment:
        items.append(BreakdownItem("per-event minimum/maximum", Decimal(0), None, adjustment))
    return Rating(total, base, tuple(items))
