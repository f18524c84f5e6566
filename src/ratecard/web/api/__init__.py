"""The API's routers, one module per resource.

`ROUTERS` is the one list `create_app` includes: a new resource (e.g. ``events`` for metering)
adds its module and one entry here — and a case in ``tests/e2e/test_isolation.py``, which fails
for any route it does not know.
"""

from __future__ import annotations

from fastapi import APIRouter

from ratecard.web.api import (
    admin,
    coupons,
    customers,
    event_reads,
    events,
    features,
    health,
    lago_events,
    metering_policy,
    meters,
    overrides,
    plans,
    subscriptions,
    usage,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    meters.router,
    features.router,
    plans.router,
    coupons.router,
    customers.router,
    overrides.router,
    subscriptions.router,
    admin.router,
    events.router,
    lago_events.router,
    event_reads.router,  # GET /v1/events and /v1/events/{id}: reads beside ingestion's POST
    usage.router,
    metering_policy.router,
)
