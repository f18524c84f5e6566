"""Late events over HTTP, on both engines: within the invoice grace period an event for the ended
period updates the draft; after the closing it is an adjustment (default) or refused.

January's usage is billed on the draft of 1 February. Until that invoice is finalized — the grace
period — an event stamped in January that arrives on 1 February is simply more January usage:
the draft's usage line grows. Finalizing closes January (`close_usage`); an event for January
that arrives after that is late. With the default policy it is kept, and the next invoice carries
an adjustment line for it; with ``late_events: reject`` it is refused with ``late_event``.

Not reachable over HTTP (so called below HTTP here, as `services.metering.lifecycle` is used by
billing): finalizing an invoice, which closes its usage period (`close_usage`), and the next
invoice's adjustment lines (`late_adjustments`). The drafts endpoint shows a closed period's
usage as it was billed (as of the closing); it does not show pending adjustment lines.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.periods import Period
from ratecard.services.metering.lifecycle import close_usage, late_adjustments
from ratecard.services.metering.priced_usage import plan_of
from tests.e2e.conftest import START, Api, Tenant, customer_body

FEBRUARY_1 = START + timedelta(days=31)
JANUARY = Period(START, FEBRUARY_1)
PLAN = {
    "code": "usage",
    "name": "Usage",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "calls", "model": "per_unit", "meter": "calls", "unit_price": "0.50"}],
    "publish": True,
}


def _call(event_id: str, at: str) -> dict[str, Any]:
    return {"id": event_id, "type": "calls", "customer": "acme", "timestamp": at}


def _january_line(api: Api, tenant: Tenant, sub_id: str) -> tuple[str, str]:
    """(quantity, amount) of the usage line on the draft that bills January."""
    drafts = api.get(f"/v1/subscriptions/{sub_id}/drafts?until_at=2024-02-01T00:00:00Z", tenant)
    closing = next(d for d in drafts["data"] if d["at"].startswith("2024-02-01"))
    (line,) = [line for line in closing["lines"] if line["kind"] == "usage"]
    assert line["period"] == {"start_at": "2024-01-01T00:00:00Z", "end_at": "2024-02-01T00:00:00Z"}
    return line["quantity"], line["amount"]


def _result(api: Api, tenant: Tenant, event: dict[str, Any]) -> dict[str, Any]:
    (result,) = api.post("/v1/events", tenant, [event])["results"]
    return dict(result)


def test_grace_period_updates_the_draft_then_late_events_adjust_or_are_refused(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    api.post("/v1/plans", tenant, PLAN)
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    sub = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": customer["id"], "plan_code": "usage", "start_at": "2024-01-01T00:00:00Z"},
    )
    api.clock.set(START + timedelta(days=20))
    for i in (1, 2):
        assert _result(api, tenant, _call(f"j{i}", "2024-01-10T12:00:00Z"))["status"] == "accepted"
    assert _january_line(api, tenant, sub["id"]) == ("2", "1.00")

    # 1 February, 02:00: January has ended, its invoice is not finalized yet (the grace period).
    api.clock.set(FEBRUARY_1 + timedelta(hours=2))
    in_grace = _result(api, tenant, _call("g1", "2024-01-31T23:30:00Z"))
    assert in_grace["status"] == "accepted"
    assert _january_line(api, tenant, sub["id"]) == ("3", "1.50")  # the draft grew

    # 03:00: January's invoice is finalized (billing closes the period; not an HTTP route).
    api.clock.set(FEBRUARY_1 + timedelta(hours=3))
    scope = TenantScope(tenant.id, Mode.LIVE)
    with UnitOfWork(api.sessions, scope, actor="billing", clock=api.clock) as uow:
        closure = close_usage(uow, customer["id"], JANUARY)
        uow.commit()
        closed_at = closure.closed_at
    assert closed_at == FEBRUARY_1 + timedelta(hours=3)

    # 04:00: an event for January is late. Default policy: kept, billed as an adjustment.
    api.clock.set(FEBRUARY_1 + timedelta(hours=4))
    late = _result(api, tenant, _call("l1", "2024-01-31T20:00:00Z"))
    assert late["status"] == "accepted"
    stored = api.get("/v1/events/l1", tenant)
    assert (stored["status"], stored["received_at"]) == ("accepted", "2024-02-01T04:00:00Z")
    # the closed period's draft stays as it was billed: the late event is the adjustment's
    assert _january_line(api, tenant, sub["id"]) == ("3", "1.50")
    with UnitOfWork(api.sessions, scope, actor="billing", clock=api.clock) as uow:
        plan = plan_of(uow.session, scope, uow.subscriptions.get(sub["id"]))
        lines = late_adjustments(uow, customer["id"], plan, at=api.clock.now())
        uow.commit()
    assert [
        (str(line.kind), line.charge_code, line.quantity, line.amount.format(), line.period)
        for line in lines
    ] == [("adjustment", "calls", Decimal(1), "0.50", JANUARY)]

    # The tenant refuses late events from now on: refused with a reason, nothing stored.
    patched = api.client.patch(
        "/v1/metering_policy", json={"late_events": "reject"}, headers=tenant.admin
    )
    assert patched.status_code == 200, patched.text
    refused = _result(api, tenant, _call("l2", "2024-01-31T21:00:00Z"))
    assert (refused["status"], refused["code"], refused["field"]) == (
        "rejected",
        "late_event",
        "timestamp",
    )
    assert refused["reason"] == "its period is already invoiced"
    assert api.client.get("/v1/events/l2", headers=tenant.admin).status_code == 404
    february = _result(api, tenant, _call("f1", "2024-02-01T01:00:00Z"))
    assert february["status"] == "accepted"  # February is open: not late
    with UnitOfWork(api.sessions, scope, actor="billing", clock=api.clock) as uow:
        plan = plan_of(uow.session, scope, uow.subscriptions.get(sub["id"]))
        assert late_adjustments(uow, customer["id"], plan, at=api.clock.now()) == []
