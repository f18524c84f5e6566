"""A month of 10,000 subscriptions with usage, through the same `simulate` users run."""

from __future__ import annotations

import random
from typing import Any

from ratecard.services.simulation import simulate

PLANS: list[dict[str, Any]] = [
    {
        "code": code,
        "name": code.title(),
        "currency": "USD",
        "charges": [
            {"code": "seats", "model": "per_unit", "source": "seats", "unit_price": seat},
            {
                "code": "api",
                "model": "graduated",
                "meter": "api_calls",
                "tiers": [
                    {"up_to": 10000, "unit_price": "0"},
                    {"up_to": 100000, "unit_price": "0.002"},
                    {"up_to": None, "unit_price": "0.001"},
                ],
            },
        ],
    }
    for code, seat in (("team", "10.00"), ("business", "25.00"))
]


def scenario(subscriptions: int, events_per_subscription: int = 10) -> dict[str, Any]:
    rng = random.Random(7)
    subs = []
    events = []
    for n in range(subscriptions):
        sub_id = f"sub_{n}"
        changes = []
        if n % 10 == 0:
            changes.append(
                {"at": "2024-01-15T00:00:00Z", "action": "change_plan", "plan": "business"}
            )
        subs.append(
            {
                "id": sub_id,
                "plan": "team",
                "start": "2024-01-01T00:00:00Z",
                "quantity": 1 + n % 20,
                "changes": changes,
            }
        )
        for k in range(events_per_subscription):
            day = 1 + rng.randrange(31)
            events.append(
                {
                    "id": f"{sub_id}-{k}",
                    "meter": "api_calls",
                    "subscription": sub_id,
                    "timestamp": f"2024-01-{day:02d}T12:00:00Z",
                    "value": str(rng.randrange(1, 20000)),
                }
            )
    return {
        "meters": [{"code": "api_calls", "aggregation": "sum", "property": "calls"}],
        "plans": PLANS,
        "subscriptions": subs,
        "events": events,
        "end": "2024-02-01T00:00:00Z",
    }


def run_simulation(subscriptions: int) -> int:
    """Returns the number of invoices, so the work cannot be optimised away."""
    return len(simulate(scenario(subscriptions)).invoices)
