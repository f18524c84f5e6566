"""Usage, entitlements, alerts and charts once a period has rolled over without the
subscription being written since: they read the period that holds now, not the stored one.

A subscription row keeps the period it had when it was last written; the renewal on 1 February
writes nothing. Two API calls in January (0.50 each, a quota of 3), then on 10 February one
call: February's report is one call and 0.50, its quota has 2 left, the alert fires again for
February, and the chart's default span is February.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ratecard.adapters.db.scope import Mode, Role, TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.services import subscription_state
from ratecard.services.metering.usage import UsageService
from tests.e2e.conftest import MAX, PRO, SEATS, START, Api, Tenant, customer_body

PLAN = {
    "code": "api",
    "name": "API",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "calls", "model": "per_unit", "meter": "calls", "unit_price": "0.50"}],
    "entitlements": [{"feature": "quota", "type": "metered", "meter": "calls", "limit": "3"}],
    "publish": True,
}


def _call(event_id: str, at: str) -> dict[str, Any]:
    return {"id": event_id, "type": "calls", "customer": "acme", "timestamp": at}


def _setup(api: Api, tenant: Tenant, mode: Mode = Mode.LIVE) -> tuple[str, str]:
    headers = tenant.headers(Role.ADMIN, mode)

    def post(path: str, body: Any) -> Any:
        response = api.client.post(path, json=body, headers=headers)
        assert response.status_code in (200, 201), response.text
        return response.json()

    post("/v1/meters", {"code": "calls", "aggregation": "count"})
    post("/v1/plans", PLAN)
    customer = post("/v1/customers", customer_body("acme"))
    sub = post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_code": "api", "start_at": START.isoformat()},
    )
    return customer["id"], sub["id"]


def _report(api: Api, tenant: Tenant, customer_id: str, mode: Mode = Mode.LIVE) -> Any:
    response = api.client.get(
        f"/v1/customers/{customer_id}/usage", headers=tenant.headers(Role.ADMIN, mode)
    )
    assert response.status_code == 200, response.text
    (report,) = response.json()["subscriptions"]
    (meter,) = report["meters"]
    return report["period"]["start_at"], meter["quantity"], meter["amount"]


def _quota(api: Api, tenant: Tenant, customer_id: str, mode: Mode = Mode.LIVE) -> Any:
    response = api.client.get(
        f"/v1/customers/{customer_id}/entitlements/quota", headers=tenant.headers(Role.ADMIN, mode)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["allowed"], body["remaining"]


def test_february_reads_february_though_the_subscription_was_last_written_in_january(
    api: Api,
) -> None:
    tenant = api.tenant()
    customer_id, sub_id = _setup(api, tenant)
    api.post("/v1/alerts", tenant, {"customer_id": customer_id, "meter": "calls", "threshold": "1"})
    api.clock.advance(timedelta(days=10))
    api.post(
        "/v1/events",
        tenant,
        [_call("j1", "2024-01-05T10:00:00Z"), _call("j2", "2024-01-06T10:00:00Z")],
    )
    assert _report(api, tenant, customer_id) == ("2024-01-01T00:00:00Z", "2", "1.00")
    assert _quota(api, tenant, customer_id) == (True, "1")

    api.clock.set(START + timedelta(days=31, hours=12))  # 1 February, noon: nothing written
    assert _quota(api, tenant, customer_id) == (True, "3")  # the cached January view is over
    assert _report(api, tenant, customer_id) == ("2024-02-01T00:00:00Z", "0", "0.00")
    api.clock.set(START + timedelta(days=40))
    api.post("/v1/events", tenant, [_call("f1", "2024-02-05T10:00:00Z")])
    assert _report(api, tenant, customer_id) == ("2024-02-01T00:00:00Z", "1", "0.50")
    assert _quota(api, tenant, customer_id) == (True, "2")
    listed = api.get(f"/v1/customers/{customer_id}/entitlements", tenant)["data"]
    assert [(e["feature"], e["usage"], e["remaining"]) for e in listed] == [("quota", "1", "2")]
    period = api.get(f"/v1/subscriptions/{sub_id}", tenant)
    assert period["current_period_start_at"] == "2024-02-01T00:00:00Z"

    fired = api.get("/v1/webhook_events", tenant)["data"]  # one crossing a period
    assert sorted((f["payload"]["period_start"], f["payload"]["value"]) for f in fired) == [
        ("2024-01-01T00:00:00Z", "2"),
        ("2024-02-01T00:00:00Z", "1"),
    ]  # instants written as the REST views write them
    series = api.get(f"/v1/customers/{customer_id}/usage/series?meter=calls", tenant)
    assert (series["period"]["start_at"], series["period"]["end_at"]) == (
        "2024-02-01T00:00:00Z",
        "2024-03-01T00:00:00Z",
    )
    assert [p["quantity"] for p in series["data"][3:6]] == ["0", "1", "0"]


def test_a_cancel_due_at_the_period_end_ends_the_usage_it_reports(api: Api) -> None:
    tenant = api.tenant()
    customer_id, sub_id = _setup(api, tenant)
    api.clock.advance(timedelta(days=10))
    api.post("/v1/events", tenant, [_call("j1", "2024-01-05T10:00:00Z")])
    canceled = api.client.post(
        f"/v1/subscriptions/{sub_id}/cancel", json={"when": "period_end"}, headers=tenant.admin
    )
    assert canceled.status_code == 200, canceled.text
    assert _report(api, tenant, customer_id) == ("2024-01-01T00:00:00Z", "1", "0.50")

    api.clock.set(START + timedelta(days=35))
    usage = api.get(f"/v1/customers/{customer_id}/usage", tenant)
    assert usage["subscriptions"] == []
    assert api.get(f"/v1/customers/{customer_id}/entitlements", tenant)["data"] == []
    assert _quota(api, tenant, customer_id) == (False, None)


def test_a_test_clock_moved_past_the_period_end_moves_the_report_too(api: Api) -> None:
    tenant = api.tenant()
    customer_id, _ = _setup(api, tenant, Mode.TEST)
    api.clock.advance(timedelta(days=10))
    test_key = tenant.headers(Role.ADMIN, Mode.TEST)
    sent = api.client.post(
        "/v1/events", json=[_call("j1", "2024-01-05T10:00:00Z")], headers=test_key
    )
    assert sent.json()["accepted"] == 1
    assert _report(api, tenant, customer_id, Mode.TEST) == ("2024-01-01T00:00:00Z", "1", "0.50")
    assert _quota(api, tenant, customer_id, Mode.TEST) == (True, "2")

    moved = api.client.post(
        "/v1/test_clock/advance", json={"to": "2024-02-03T00:00:00Z"}, headers=test_key
    )
    assert moved.status_code == 200, moved.text
    assert _quota(api, tenant, customer_id, Mode.TEST) == (True, "3")
    assert _report(api, tenant, customer_id, Mode.TEST) == ("2024-02-01T00:00:00Z", "0", "0.00")


BIGGER = {
    **PLAN,
    "code": "api_plus",
    "name": "API plus",
    "charges": [{"code": "calls", "model": "per_unit", "meter": "calls", "unit_price": "1.00"}],
    "entitlements": [{"feature": "quota", "type": "metered", "meter": "calls", "limit": "10"}],
}


def test_a_plan_change_due_at_the_period_end_prices_the_new_period(api: Api) -> None:
    tenant = api.tenant()
    customer_id, sub_id = _setup(api, tenant)
    api.post("/v1/plans", tenant, BIGGER)
    api.clock.advance(timedelta(days=10))
    changed = api.client.post(
        f"/v1/subscriptions/{sub_id}/change",
        json={"plan_code": "api_plus", "when": "period_end"},
        headers=tenant.admin,
    )
    assert changed.status_code == 200, changed.text
    api.post("/v1/events", tenant, [_call("j1", "2024-01-05T10:00:00Z")])
    assert _report(api, tenant, customer_id) == ("2024-01-01T00:00:00Z", "1", "0.50")
    assert _quota(api, tenant, customer_id) == (True, "2")

    api.clock.set(START + timedelta(days=40))  # February: the change took effect, unwritten
    api.post("/v1/events", tenant, [_call("f1", "2024-02-05T10:00:00Z")])
    (report,) = api.get(f"/v1/customers/{customer_id}/usage", tenant)["subscriptions"]
    assert (report["plan_code"], report["amount"], report["period"]["start_at"]) == (
        "api_plus",
        "1.00",
        "2024-02-01T00:00:00Z",
    )
    assert _quota(api, tenant, customer_id) == (True, "9")


def test_the_subscription_that_accrues_now_is_the_one_read(api: Api) -> None:
    """Two subscriptions: the first, canceled at the period end, ends on 1 February; from then
    the entitlements and the report follow the second."""
    tenant = api.tenant()
    customer_id, first = _setup(api, tenant)
    api.post("/v1/plans", tenant, BIGGER)
    api.clock.advance(timedelta(days=1))  # created after the first
    second = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": customer_id, "plan_code": "api_plus", "start_at": START.isoformat()},
    )
    api.clock.advance(timedelta(days=9))
    canceled = api.client.post(
        f"/v1/subscriptions/{first}/cancel", json={"when": "period_end"}, headers=tenant.admin
    )
    assert canceled.status_code == 200, canceled.text
    assert _quota(api, tenant, customer_id) == (True, "3")  # the first one created
    api.clock.set(START + timedelta(days=40))
    assert _quota(api, tenant, customer_id) == (True, "10")
    reports = api.get(f"/v1/customers/{customer_id}/usage", tenant)["subscriptions"]
    assert [r["subscription_id"] for r in reports] == [second["id"]]


YEARLY = {**PRO, "code": "pro_year", "name": "Pro yearly", "interval": "year"}
_STATE_FIELDS = (
    "status",
    "plan_code",
    "plan_version",
    "quantity",
    "anchor_at",
    "current_period_start_at",
    "current_period_end_at",
    "trial_ends_at",
    "cancel_at_period_end",
    "canceled_at",
    "pending_change",
)


def test_the_state_usage_reads_past_a_period_is_the_full_replays(api: Api) -> None:
    """Usage reads a subscription whose period ended through `subscription_state.state_at` (one
    statement, plans parsed once, no price overrides), and entitlements and alerts through
    `_state_as_of`, its row form; it must give the state `as_of` gives, whatever the
    timeline: trials, quantity and plan changes, a new interval, cancels, pauses, overrides."""
    tenant = api.tenant()
    for plan in (PRO, MAX, SEATS, YEARLY):
        api.post("/v1/plans", tenant, plan)
    cus = api.post("/v1/customers", tenant, customer_body())["id"]
    api.post(
        f"/v1/customers/{cus}/price_overrides",
        tenant,
        {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "8.00"}},
    )
    own = {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "7.50"}}

    def subscribe(**body: Any) -> str:
        return str(api.post("/v1/subscriptions", tenant, {"customer_id": cus, **body})["id"])

    def change(sub_id: str, body: dict[str, Any]) -> None:
        api.post(f"/v1/subscriptions/{sub_id}/change", tenant, body)

    trial = subscribe(plan_code="pro", trial_days=45)
    seats = subscribe(plan_code="team", quantity=3, price_overrides=[own])
    to_max = subscribe(plan_code="pro")
    to_year = subscribe(plan_code="pro")
    ending = subscribe(plan_code="max")
    paused = subscribe(plan_code="pro")
    api.clock.advance(timedelta(days=12))
    change(seats, {"quantity": 5})
    change(to_max, {"plan_code": "max", "when": "period_end"})
    change(to_year, {"plan_code": "pro_year", "when": "period_end"})
    api.post(f"/v1/subscriptions/{ending}/cancel", tenant, {"when": "period_end"})
    api.post(f"/v1/subscriptions/{paused}/pause", tenant)
    api.clock.advance(timedelta(days=8))
    api.post(f"/v1/subscriptions/{paused}/resume", tenant)
    ids = (trial, seats, to_max, to_year, ending, paused)
    for days in (31, 47, 75, 400):
        now = START + timedelta(days=days, hours=5)
        with UnitOfWork(
            api.sessions, TenantScope(tenant.id, Mode.LIVE), actor="t", clock=api.clock
        ) as uow:
            for sub_id in ids:
                full = subscription_state.as_of(uow, uow.subscriptions.get(sub_id), now)
                expected = {name: getattr(full, name) for name in _STATE_FIELDS}
                light = subscription_state._state_as_of(uow, uow.subscriptions.get(sub_id), now)
                assert {name: getattr(light, name) for name in _STATE_FIELDS} == expected, (
                    sub_id,
                    days,
                )
    cached = subscription_state._STATE_PLANS[api.sessions.kw["bind"]]
    assert {key[2:] for key in cached if key[0] == tenant.id} == {
        ("pro", 1),
        ("team", 1),
        ("max", 1),
        ("pro_year", 1),
    }


def test_state_plans_are_cached_once_they_can_no_longer_change(api: Api) -> None:
    """Only a version that can be sold is kept parsed (a draft is read again each time); once
    per scope: another tenant's plan of the same code is its own."""
    first, second = api.tenant("First"), api.tenant("Second")
    api.post("/v1/plans", first, PRO)
    api.post("/v1/plans", second, {**PRO, "interval": "year"})
    draft = {**MAX, "publish": False}
    api.post("/v1/plans", first, draft)
    intervals = []
    for tenant in (first, second):
        with UnitOfWork(
            api.sessions, TenantScope(tenant.id, Mode.LIVE), actor="t", clock=api.clock
        ) as uow:
            intervals.append(
                str(subscription_state._state_plan(uow.session, uow.scope, "pro", 1).interval.unit)
            )
            if tenant is first:
                subscription_state._state_plan(uow.session, uow.scope, "max", 1)
    assert intervals == ["month", "year"]
    cached = subscription_state._STATE_PLANS[api.sessions.kw["bind"]]
    assert (first.id, "live", "pro", 1) in cached
    assert (second.id, "live", "pro", 1) in cached
    assert (first.id, "live", "max", 1) not in cached  # a draft


def test_one_subscriptions_usage_past_its_period_is_what_the_report_reads(api: Api) -> None:
    """`UsageService.subscription_usage` reads a renewal nothing wrote as the customer's report
    does, in one session; past a cancel due at the period end it still answers, for the last
    period."""
    tenant = api.tenant()
    customer_id, sub_id = _setup(api, tenant)
    api.clock.set(START + timedelta(days=40))
    api.post(
        "/v1/events",
        tenant,
        [_call("f1", "2024-02-05T10:00:00Z"), _call("f2", "2024-02-06T10:00:00Z")],
    )
    usage = UsageService(api.sessions, api.clock)
    scope = TenantScope(tenant.id, Mode.LIVE)
    (report,) = usage.customer_usage(scope, customer_id)
    one = usage.subscription_usage(scope, sub_id)
    assert one == report
    assert one.period.start_at == START + timedelta(days=31)
    assert [(m.quantity, m.line.amount.format()) for m in one.meters] == [(2, "1.00")]

    api.post(f"/v1/subscriptions/{sub_id}/cancel", tenant, {"when": "period_end"})
    api.clock.set(START + timedelta(days=75))  # ended on 1 March
    assert usage.customer_usage(scope, customer_id) == []
    ended = usage.subscription_usage(scope, sub_id)
    assert (ended.period.start_at, ended.period.end_at) == (
        START + timedelta(days=31),
        START + timedelta(days=60),
    )
    assert [m.quantity for m in ended.meters] == [2]
