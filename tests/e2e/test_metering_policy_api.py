"""GET/PATCH /v1/metering_policy, and the policy at work through HTTP, on both engines.

Held events are counted (and the listeners of ingestion told) when their customer is created
through the API; an event for an already closed period is an adjustment by default and refused
under the ``reject`` policy.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ratecard.adapters.db.models import AuditEntryRow
from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.periods import Period
from ratecard.services.metering.lifecycle import close_usage, late_adjustments
from ratecard.services.metering.priced_usage import plan_of
from tests.e2e.conftest import START, Api, Tenant, customer_body

POLICY = "/v1/metering_policy"
DECEMBER = Period(START - timedelta(days=31), START)
USAGE_PLAN = {
    "code": "usage",
    "name": "Usage",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "calls", "model": "per_unit", "meter": "calls", "unit_price": "0.50"}],
    "publish": True,
}


def _event(event_id: str, customer: str = "acme", at: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = {"id": event_id, "type": "calls", "customer": customer}
    if at is not None:
        event["timestamp"] = at.isoformat()
    return event


def _statuses(api: Api, tenant: Tenant, events: list[dict[str, Any]]) -> list[Any]:
    body = api.post("/v1/events", tenant, events)
    return [(r["status"], r.get("code")) for r in body["results"]]


def _usage(api: Api, tenant: Tenant, customer_id: str, period: Period) -> Decimal:
    metering = api.app.state.wiring.metering
    scope = TenantScope(tenant.id, Mode.LIVE)
    return Decimal(metering.usage.meter_usage(scope, customer_id, "calls", period).total.value)


def test_policy_defaults_changes_roles_and_audit(api: Api) -> None:
    tenant = api.tenant()
    assert api.get(POLICY, tenant) == {
        "object": "metering_policy",
        "mode": "live",
        "unknown_customer": "reject",
        "unknown_meter": "reject",
        "late_events": "adjust",
        "max_past_seconds": 35 * 86400,
        "max_future_seconds": 300,
    }
    bad = api.client.patch(
        POLICY,
        json={
            "unknown_customer": "maybe",
            "late_events": "later",
            "max_past_seconds": -1,
            "max_future_seconds": 1.5,
            "colour": "red",
        },
        headers=tenant.admin,
    )
    assert bad.status_code == 422, bad.text
    assert {e["field"] for e in bad.json()["errors"]} == {
        "body.unknown_customer",
        "body.late_events",
        "body.max_past_seconds",
        "body.max_future_seconds",
        "body.colour",
    }
    too_far = api.client.patch(
        POLICY,
        json={"max_future_seconds": 8 * 86400, "unknown_meter": None},
        headers=tenant.admin,
    )
    assert too_far.status_code == 422, too_far.text
    assert {e["field"] for e in too_far.json()["errors"]} == {
        "body.max_future_seconds",
        "body.unknown_meter",
    }
    for role in (Role.READ_ONLY, Role.INGEST):
        refused = api.client.patch(POLICY, json={}, headers=tenant.headers(role))
        assert refused.status_code == 403, (role, refused.text)
    changed = api.client.patch(
        POLICY,
        json={"unknown_customer": "hold", "max_past_seconds": 7 * 86400},
        headers=tenant.headers(Role.BILLING),
    )
    assert changed.status_code == 200, changed.text
    assert api.get(POLICY, tenant) == {
        **changed.json(),
        "unknown_customer": "hold",
        "unknown_meter": "reject",
        "max_past_seconds": 7 * 86400,
    }
    test_mode = api.client.get(POLICY, headers=tenant.headers(Role.ADMIN, Mode.TEST))
    assert test_mode.json()["unknown_customer"] == "reject"  # each mode has its own policy
    with api.sessions() as session:
        entries = session.scalars(
            sa.select(AuditEntryRow).where(
                AuditEntryRow.tenant_id == tenant.id,
                AuditEntryRow.object_type == "metering_policy",
            )
        ).all()
    assert [(e.action, (e.after or {}).get("unknown_customer")) for e in entries] == [
        ("metering_policy.created", "hold")
    ]
    assert entries[0].actor.startswith("api_key:")


def test_held_event_is_counted_and_heard_when_its_customer_is_created(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    api.client.patch(POLICY, json={"unknown_customer": "hold"}, headers=tenant.admin)
    assert _statuses(api, tenant, [_event("h1", "later"), _event("h2", "later")]) == [
        ("held", None),
        ("held", None),
    ]
    heard: list[frozenset[tuple[str, str]]] = []
    listeners = api.app.state.wiring.metering.ingestion.listeners
    listeners.append(lambda scope, pairs: heard.append(pairs))
    try:
        customer = api.post("/v1/customers", tenant, customer_body("later"))
    finally:
        listeners.pop()
    assert heard == [frozenset({(customer["id"], "calls")})]
    month = Period(START - timedelta(days=1), START + timedelta(days=1))
    assert _usage(api, tenant, customer["id"], month) == 2
    assert _statuses(api, tenant, [_event("h1", "later")]) == [("duplicate", None)]


def test_late_events_follow_the_policy(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    api.post("/v1/plans", tenant, USAGE_PLAN)
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    sub = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": customer["id"], "plan_code": "usage", "start_at": "2023-12-01T00:00:00Z"},
    )
    in_december = START - timedelta(days=10)
    assert _statuses(api, tenant, [_event("d1", at=in_december)]) == [("accepted", None)]
    scope = TenantScope(tenant.id, Mode.LIVE)
    with UnitOfWork(api.sessions, scope, actor="billing", clock=api.clock) as uow:
        close_usage(uow, customer["id"], DECEMBER)  # December is invoiced
        uow.commit()
    api.clock.advance(timedelta(seconds=1))

    assert _statuses(api, tenant, [_event("d2", at=in_december)]) == [("accepted", None)]
    with UnitOfWork(api.sessions, scope, actor="billing", clock=api.clock) as uow:
        plan = plan_of(uow.session, scope, uow.subscriptions.get(sub["id"]))
        lines = late_adjustments(uow, customer["id"], plan, at=api.clock.now())
        uow.commit()
    assert [(str(line.kind), line.quantity, line.amount.format()) for line in lines] == [
        ("adjustment", Decimal(1), "0.50")
    ]

    api.client.patch(POLICY, json={"late_events": "reject"}, headers=tenant.admin)
    assert _statuses(api, tenant, [_event("d3", at=in_december), _event("j1", at=START)]) == [
        ("rejected", "late_event"),
        ("accepted", None),
    ]
    assert _usage(api, tenant, customer["id"], DECEMBER) == 2


def test_held_events_are_still_released_after_the_policy_goes_back_to_reject(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    known = api.post("/v1/customers", tenant, customer_body("acme"))
    holding = api.client.patch(
        POLICY, json={"unknown_customer": "hold", "unknown_meter": "hold"}, headers=tenant.admin
    )
    assert holding.status_code == 200, holding.text
    early = [
        _event("u1", "later"),  # unknown customer
        {"id": "m1", "type": "storage", "customer": "acme", "properties": {"gb": "1"}},
        {"id": "b1", "type": "storage", "customer": "ghost", "properties": {"gb": "2"}},
    ]
    assert _statuses(api, tenant, early) == [("held", None)] * 3

    back = api.client.patch(
        POLICY, json={"unknown_customer": "reject", "unknown_meter": "reject"}, headers=tenant.admin
    )
    assert back.status_code == 200, back.text
    assert _statuses(api, tenant, [_event("u2", "later")]) == [("rejected", "unknown_customer")]
    held = api.get("/v1/events?status=held", tenant)["data"]
    assert sorted(e["id"] for e in held) == ["b1", "m1", "u1"]  # kept, and visible

    later = api.post("/v1/customers", tenant, customer_body("later"))
    assert api.get("/v1/events/u1", tenant)["status"] == "accepted"
    month = Period(START - timedelta(days=1), START + timedelta(days=1))
    assert _usage(api, tenant, later["id"], month) == 1
    api.post("/v1/meters", tenant, {"code": "storage", "aggregation": "sum", "value_field": "gb"})
    released = api.get("/v1/events/m1", tenant)
    assert (released["status"], released["customer_id"]) == ("accepted", known["id"])
    assert [e["id"] for e in api.get("/v1/events?status=held", tenant)["data"]] == ["b1"]
    assert _statuses(api, tenant, [_event("u1", "later")]) == [("duplicate", None)]
