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

from ratecard.adapters.db.scope import Mode, Role
from tests.e2e.conftest import START, Api, Tenant, customer_body

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
