"""Graduated percentage: a percent per band of the period's cumulative amount, plus band fees.

Worked example — Lago's documentation: up to 1,000 at 1 % + 200 flat, up to 10,000 at 2 % + 300,
above at 3 % + 400. Transactions 500, 550 and 4,000 in one period cost 205, 306 and 80 each (the
difference of the cumulative cost), 591 in total::

    >>> from decimal import Decimal as Dec
    >>> from ratecard.core.catalog import PriceSpec, Tier
    >>> price = PriceSpec(tiers=(Tier(Dec(1000), flat_fee=Dec(200), rate=Dec(1)),
    ...                          Tier(Dec(10000), flat_fee=Dec(300), rate=Dec(2)),
    ...                          Tier(None, flat_fee=Dec(400), rate=Dec(3))))
    >>> transaction_amounts(price, (Dec(500), Dec(550), Dec(4000)))
    (Decimal('205.00'), Decimal('306.00'), Decimal('80.00'))
    >>> rate_graduated_percentage(price, Dec(5050), Usage(Dec(5050))).amount
    Decimal('591.00')

A band's flat fee is charged when the band is first reached, so nothing at all is charged at 0
(unlike graduated, where Stripe charges the first tier's flat fee at quantity 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from ratecard.core.catalog import PriceSpec
from ratecard.core.pricing.graduated import walk_tiers
from ratecard.core.pricing.values import EXACT, ZERO, Rating, Usage


def cumulative_cost(price: PriceSpec, total: Decimal) -> Decimal:
    """The graduated-percentage cost of a cumulative amount `total`."""
    cost, _ = walk_tiers(price.tiers, total, percent=True, first_flat_at_zero=False)
    return cost


def rate_graduated_percentage(price: PriceSpec, quantity: Decimal, usage: Usage) -> Rating:
    cost, items = walk_tiers(price.tiers, quantity, percent=True, first_flat_at_zero=False)
    return Rating(cost, quantity, tuple(items))


def transaction_amounts(
    price: PriceSpec, values: Sequence[Decimal], already: Decimal = ZERO
) -> tuple[Decimal, ...]:
    """Per-transaction charges (pay in advance): each is the rise of the cumulative cost.

    `already` is the cumulative amount of the period before the first of `values`. The
    amounts sum to cost(already + sum(values)) − cost(already).
    """
    amounts = []
    running = already
    before = cumulative_cost(price, running)
    for value in values:
        running = EXACT.add(running, value)
        after = cumulative_cost(price, running)
        amounts.append(EXACT.subtract(after, before))
        before = after
    return tuple(amounts)
