"""Tenant isolation for every route in the OpenAPI document.

Tenant A creates one of everything; tenant B (and A's own test-mode key) then calls every route
with A's ids: 404 (never 403) for A's objects, lists without A's objects, creates that neither
fail nor succeed because of A's data. A route without a case here fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ratecard.adapters.db.scope import Mode, Role
from tests.e2e.conftest import PRO, Api, customer_body


@dataclass
class World:
    api: Api
    ids: dict[str, str]
    headers: dict[str, str]

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        url = path.format(**self.ids)
        return self.api.client.request(method, url, json=body, headers=self.headers)

    def hidden(self, method: str, path: str, body: Any = None) -> None:
        response = self.call(method, path, body)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        assert response.json()["code"] == "not_found", response.text

    def listed_without(self, path: str) -> None:
        response = self.call("GET", path)
        assert response.status_code == 200, (path, response.text)
        text = response.text
        for name, value in self.ids.items():
            assert value not in text or name == "plan_code", (path, name)

    def refused_as_unknown(self, path: str, body: Any, field: str) -> None:
        response = self.call("POST", path, body)
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert response.json()["errors"][0]["field"] == field


CHANGE = {"action": "change_quantity", "quantity": 2}

Case = Callable[[World], None]
CASES: dict[tuple[str, str], Case] = {
    ("GET", "/healthz"): lambda w: None,
    ("GET", "/metrics"): lambda w: None,
    ("POST", "/v1/meters"): lambda w: _creates(
        w, "/v1/meters", {"code": "calls", "aggregation": "count"}
    ),
    ("GET", "/v1/meters"): lambda w: w.listed_without("/v1/meters"),
    ("GET", "/v1/meters/{meter_id}"): lambda w: w.hidden("GET", "/v1/meters/{meter_id}"),
    ("PATCH", "/v1/meters/{meter_id}"): lambda w: w.hidden(
        "PATCH",
        "/v1/meters/{meter_id}",
        {
            "rounding": None,
            "name": "Mallory",
            "aggregation": "sum",
            "value_field": "n",
            "filters": {"plan": "x"},
            "group_by": ["region"],
        },
    ),
    ("POST", "/v1/features"): lambda w: w.refused_as_unknown(
        "/v1/features", {"code": "f", "kind": "metered", "meter_code": "calls"}, "body.meter_code"
    ),
    ("GET", "/v1/features"): lambda w: w.listed_without("/v1/features"),
    ("GET", "/v1/features/{feature_id}"): lambda w: w.hidden("GET", "/v1/features/{feature_id}"),
    ("POST", "/v1/coupons"): lambda w: _creates(
        w, "/v1/coupons", {"code": "welcome", "percent_off": "10"}
    ),
    ("GET", "/v1/coupons"): lambda w: w.listed_without("/v1/coupons"),
    ("GET", "/v1/coupons/{coupon_id}"): lambda w: w.hidden("GET", "/v1/coupons/{coupon_id}"),
    ("POST", "/v1/plans"): lambda w: _creates(w, "/v1/plans", {**PRO, "code": "a_plan"}),
    ("GET", "/v1/plans"): lambda w: w.listed_without("/v1/plans"),
    ("GET", "/v1/plans/{plan_code}"): lambda w: w.hidden("GET", "/v1/plans/{plan_code}"),
    ("POST", "/v1/plans/{plan_code}/versions"): lambda w: w.hidden(
        "POST", "/v1/plans/{plan_code}/versions", {**PRO, "code": "a_plan"}
    ),
    ("GET", "/v1/plans/{plan_code}/versions"): lambda w: w.hidden(
        "GET", "/v1/plans/{plan_code}/versions"
    ),
    ("GET", "/v1/plans/{plan_code}/versions/{version}"): lambda w: w.hidden(
        "GET", "/v1/plans/{plan_code}/versions/1"
    ),
    ("POST", "/v1/plans/{plan_code}/versions/{version}/publish"): lambda w: w.hidden(
        "POST", "/v1/plans/{plan_code}/versions/1/publish"
    ),
    ("POST", "/v1/plans/{plan_code}/versions/{version}/archive"): lambda w: w.hidden(
        "POST", "/v1/plans/{plan_code}/versions/1/archive"
    ),
    ("POST", "/v1/plans/{plan_code}/migrate"): lambda w: w.hidden(
        "POST", "/v1/plans/{plan_code}/migrate", {"to_version": 1}
    ),
    ("POST", "/v1/customers"): lambda w: _creates(w, "/v1/customers", customer_body("a-ext")),
    ("GET", "/v1/customers"): lambda w: w.listed_without("/v1/customers"),
    ("GET", "/v1/customers/{customer_id}"): lambda w: w.hidden(
        "GET", "/v1/customers/{customer_id}"
    ),
    ("PATCH", "/v1/customers/{customer_id}"): lambda w: w.hidden(
        "PATCH", "/v1/customers/{customer_id}", {"name": "Mallory"}
    ),
    ("POST", "/v1/customers/{customer_id}/price_overrides"): lambda w: w.hidden(
        "POST",
        "/v1/customers/{customer_id}/price_overrides",
        {"plan_code": "a_plan", "charge_code": "base", "price": {"amount": "1.00"}},
    ),
    ("GET", "/v1/customers/{customer_id}/price_overrides"): lambda w: w.hidden(
        "GET", "/v1/customers/{customer_id}/price_overrides"
    ),
    ("GET", "/v1/price_overrides/{override_id}"): lambda w: w.hidden(
        "GET", "/v1/price_overrides/{override_id}"
    ),
    ("DELETE", "/v1/price_overrides/{override_id}"): lambda w: w.hidden(
        "DELETE", "/v1/price_overrides/{override_id}"
    ),
    ("POST", "/v1/subscriptions"): lambda w: w.refused_as_unknown(
        "/v1/subscriptions",
        {"customer_id": w.ids["customer_id"], "plan_code": "a_plan"},
        "body.customer_id",
    ),
    ("GET", "/v1/subscriptions"): lambda w: w.listed_without("/v1/subscriptions"),
    ("GET", "/v1/subscriptions/{subscription_id}"): lambda w: w.hidden(
        "GET", "/v1/subscriptions/{subscription_id}?expand=customer,plan"
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/preview"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/preview", CHANGE
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/change"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/change", {"quantity": 2}
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/migrate"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/migrate", {"plan_version": 1}
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/cancel"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/cancel", {"when": "now"}
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/pause"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/pause"
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/resume"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/resume"
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/reactivate"): lambda w: w.hidden(
        "POST", "/v1/subscriptions/{subscription_id}/reactivate"
    ),
    ("GET", "/v1/subscriptions/{subscription_id}/timeline"): lambda w: w.hidden(
        "GET", "/v1/subscriptions/{subscription_id}/timeline"
    ),
    ("GET", "/v1/subscriptions/{subscription_id}/drafts"): lambda w: w.hidden(
        "GET", "/v1/subscriptions/{subscription_id}/drafts"
    ),
    ("POST", "/v1/api_keys"): lambda w: _creates(
        w, "/v1/api_keys", {"name": "b", "role": "read_only"}
    ),
    ("GET", "/v1/api_keys"): lambda w: w.listed_without("/v1/api_keys"),
    ("POST", "/v1/api_keys/{api_key_id}/revoke"): lambda w: w.hidden(
        "POST", "/v1/api_keys/{api_key_id}/revoke"
    ),
    ("GET", "/v1/tenant"): lambda w: _own(w, "GET", "/v1/tenant"),
    ("PATCH", "/v1/tenant"): lambda w: _own(w, "PATCH", "/v1/tenant", {}),
    ("GET", "/v1/test_clock"): lambda w: _own(w, "GET", "/v1/test_clock", test_only=True),
    ("POST", "/v1/test_clock/advance"): lambda w: _own(
        w, "POST", "/v1/test_clock/advance", {"to": "2024-01-01T00:00:00Z"}, test_only=True
    ),
    # metering (tests/e2e/test_events_api.py): A's customer, subscription and meter are unknown
    ("POST", "/v1/events"): lambda w: (
        _ingest_refused(w, "/v1/events", [_EVENT]),
        _ingest_refused(w, "/v1/events", _EVENT),
    ),
    ("POST", "/v1/track"): lambda w: _ingest_refused(w, "/v1/track", _TRACK),
    ("POST", "/v1/batch"): lambda w: _ingest_refused(w, "/v1/batch", {"batch": [_TRACK]}),
    ("GET", "/v1/events/{event_id}"): lambda w: w.hidden("GET", "/v1/events/{event_id}"),
    ("GET", "/v1/events"): lambda w: w.listed_without("/v1/events?customer_ref=a-ext"),
    ("POST", "/api/v1/events"): lambda w: w.refused_as_unknown(
        "/api/v1/events", {"event": _lago(w)}, "event.external_subscription_id"
    ),
    ("POST", "/api/v1/events/batch"): lambda w: _ingest_refused(
        w, "/api/v1/events/batch", {"events": [_lago(w)]}, key="events"
    ),
    ("GET", "/v1/customers/{customer_id}/usage"): lambda w: w.hidden(
        "GET", "/v1/customers/{customer_id}/usage"
    ),
    ("GET", "/v1/customers/{customer_id}/usage/series"): lambda w: w.hidden(
        "GET", "/v1/customers/{customer_id}/usage/series?meter=calls"
    ),
    ("GET", "/v1/customers/{customer_id}/entitlements"): lambda w: w.hidden(
        "GET", "/v1/customers/{customer_id}/entitlements"
    ),
    ("GET", "/v1/customers/{customer_id}/entitlements/{feature}"): lambda w: w.hidden(
        "GET", "/v1/customers/{customer_id}/entitlements/f"
    ),
    ("POST", "/v1/alerts"): lambda w: w.refused_as_unknown(
        "/v1/alerts",
        {"customer_id": w.ids["customer_id"], "meter": "calls", "threshold": "5"},
        "body.customer_id",
    ),
    ("GET", "/v1/alerts"): lambda w: w.listed_without("/v1/alerts"),
    ("GET", "/v1/alerts/{alert_id}"): lambda w: w.hidden("GET", "/v1/alerts/{alert_id}"),
    ("DELETE", "/v1/alerts/{alert_id}"): lambda w: w.hidden("DELETE", "/v1/alerts/{alert_id}"),
    ("GET", "/v1/webhook_events"): lambda w: w.listed_without("/v1/webhook_events"),
    ("GET", "/v1/metering_policy"): lambda w: _own(w, "GET", "/v1/metering_policy"),
    ("PATCH", "/v1/metering_policy"): lambda w: _own(
        w, "PATCH", "/v1/metering_policy", {"max_future_seconds": 300}
    ),
}

_EVENT = {"id": "iso-1", "type": "calls", "customer": "a-ext"}
_TRACK = {"type": "track", "event": "calls", "userId": "a-ext", "messageId": "iso-2"}


def _lago(w: World) -> dict[str, Any]:
    return {
        "transaction_id": "iso-3",
        "code": "calls",
        "external_subscription_id": w.ids["subscription_id"],
    }


def _ingest_refused(w: World, path: str, body: Any, key: str = "results") -> None:
    """Events naming A's customer or subscription are rejected for B, and count nothing for A:
    a batch answers each event's result; one event alone is a 422 problem."""
    response = w.call("POST", path, body)
    if isinstance(body, list) or "batch" in body or "events" in body:
        assert response.status_code == 200, (path, response.status_code, response.text)
        results = response.json()[key]
        assert [r["status"] for r in results] == ["rejected"], (path, response.text)
        return
    assert response.status_code == 422, (path, response.status_code, response.text)
    codes = {e["code"] for e in response.json()["errors"]}
    assert codes <= {"unknown_customer", "unknown_meter"}, (path, response.text)


def _own(w: World, method: str, path: str, body: Any = None, *, test_only: bool = False) -> None:
    """A route about the caller's own tenant: it answers, and shows nothing of A's objects
    (a live key finds no test clock)."""
    response = w.call(method, path, body)
    if test_only and "rk_live_" in w.headers["Authorization"]:
        assert response.status_code == 404, (path, response.status_code, response.text)
        return
    assert response.status_code == 200, (path, response.status_code, response.text)
    for name, value in w.ids.items():
        assert value not in response.text or name == "plan_code", (path, name)


def _creates(w: World, path: str, body: dict[str, Any]) -> None:
    """The same code or external id as A's object: created, so nothing reveals A's exists."""
    response = w.call("POST", path, body)
    assert response.status_code == 201, (path, response.status_code, response.text)


def _tenant_a(api: Api) -> tuple[dict[str, str], Any]:
    a = api.tenant("A")
    meter = api.post(
        "/v1/meters",
        a,
        {"code": "calls", "aggregation": "count", "rounding": {"mode": "up", "precision": 0}},
    )
    feature = api.post("/v1/features", a, {"code": "f", "kind": "metered", "meter_code": "calls"})
    coupon = api.post("/v1/coupons", a, {"code": "welcome", "percent_off": "10"})
    api.post("/v1/plans", a, {**PRO, "code": "a_plan"})
    cus = api.post("/v1/customers", a, customer_body("a-ext"))
    override = api.post(
        f"/v1/customers/{cus['id']}/price_overrides",
        a,
        {"plan_code": "a_plan", "charge_code": "base", "price": {"amount": "90.00"}},
    )
    sub = api.post("/v1/subscriptions", a, {"customer_id": cus["id"], "plan_code": "a_plan"})
    alert = api.post(
        "/v1/alerts", a, {"customer_id": cus["id"], "meter": "calls", "threshold": "5"}
    )
    event = api.post("/v1/events", a, {"id": "a-evt-1", "type": "calls", "customer": "a-ext"})
    assert event["accepted"] == 1
    ids = {
        "meter_id": meter["id"],
        "feature_id": feature["id"],
        "coupon_id": coupon["id"],
        "plan_code": "a_plan",
        "customer_id": cus["id"],
        "override_id": override["id"],
        "subscription_id": sub["id"],
        "api_key_id": api.post("/v1/api_keys", a, {"name": "a", "role": "billing"})["id"],
        "alert_id": alert["id"],
        "event_id": "a-evt-1",
    }
    return ids, a


#: Creates run last: B making its own "a_plan" would otherwise answer the plan routes.
CREATES = {
    ("POST", "/v1/meters"),
    ("POST", "/v1/coupons"),
    ("POST", "/v1/plans"),
    ("POST", "/v1/customers"),
}


def _routes(api: Api) -> list[tuple[str, str]]:
    paths = api.app.openapi()["paths"]
    routes = [(method.upper(), path) for path, item in paths.items() for method in item]
    return sorted(routes, key=lambda route: (route in CREATES, route))


def _snapshot(api: Api, a: Any, ids: dict[str, str]) -> list[Any]:
    return [
        api.get("/v1/meters", a),
        api.get("/v1/subscriptions/{subscription_id}/timeline".format(**ids), a),
        api.get("/v1/customers/{customer_id}".format(**ids), a),
        api.get("/v1/plans/a_plan/versions", a),
        api.get("/v1/customers/{customer_id}/price_overrides".format(**ids), a),
        api.get("/v1/customers/{customer_id}/usage".format(**ids), a),
        api.get("/v1/alerts", a),
        api.get("/v1/events", a),
        api.get("/v1/metering_policy", a),
    ]


def test_every_route_has_an_isolation_case(api: Api) -> None:
    missing = [route for route in _routes(api) if route not in CASES]
    assert not missing, f"routes without a tenant-isolation case: {missing}"


def test_another_tenant_cannot_read_change_or_detect(api: Api) -> None:
    ids, a = _tenant_a(api)
    before = _snapshot(api, a, ids)
    b = api.tenant("B")
    world = World(api, ids, b.headers(Role.ADMIN))
    for route in _routes(api):
        CASES[route](world)
    assert _snapshot(api, a, ids) == before


def test_test_mode_cannot_see_live_data(api: Api) -> None:
    ids, a = _tenant_a(api)
    before = _snapshot(api, a, ids)
    world = World(api, ids, a.headers(Role.ADMIN, Mode.TEST))
    for route in _routes(api):
        CASES[route](world)
    assert _snapshot(api, a, ids) == before


def test_events_naming_another_tenants_customer_stay_in_the_senders_tenant(api: Api) -> None:
    """B has a meter ``calls`` as A has. B's events naming A's customer (its external id, its
    subscription, even A's event id) are B's own: rejected ``unknown_customer`` under B's default
    policy, held (for a customer of B's that may come) under ``hold``, never a duplicate of A's;
    A's usage and events do not change, and B never reads A's event."""
    ids, a = _tenant_a(api)
    before = _snapshot(api, a, ids)
    b = api.tenant("B")
    api.post("/v1/meters", b, {"code": "calls", "aggregation": "count"})

    def outcomes(path: str, body: Any) -> list[tuple[str, str | None, str | None]]:
        response = api.client.post(path, json=body, headers=b.admin)
        if response.status_code == 422:  # one event refused: a problem naming the body's field
            return [("rejected", e["code"], e["field"]) for e in response.json()["errors"]]
        assert response.status_code == 200, response.text
        return [(r["status"], r["code"], r["field"]) for r in response.json()["results"]]

    sent = [
        {"id": "a-evt-1", "type": "calls", "customer": "a-ext"},  # A's event id, too
        {"id": "b-evt-1", "type": "calls", "customer": "a-ext"},
        {"id": "b-evt-2", "type": "calls", "subscription": ids["subscription_id"]},
    ]
    assert outcomes("/v1/events", sent) == [
        ("rejected", "unknown_customer", "customer"),
        ("rejected", "unknown_customer", "customer"),
        ("rejected", "unknown_customer", "subscription"),
    ]
    assert outcomes("/v1/track", {**_TRACK, "messageId": "b-trk-1"}) == [
        ("rejected", "unknown_customer", "body.userId")
    ]
    lago = api.client.post(
        "/api/v1/events",
        json={
            "event": {
                "transaction_id": "b-lago-1",
                "code": "calls",
                "external_customer_id": "a-ext",
            }
        },
        headers=b.admin,
    )
    assert lago.status_code == 422, lago.text
    assert [(e["code"], e["field"]) for e in lago.json()["errors"]] == [
        ("unknown_customer", "event.external_customer_id")
    ]
    hidden = api.client.get("/v1/events/a-evt-1", headers=b.admin)
    assert (hidden.status_code, hidden.json()["code"]) == (404, "not_found")
    assert api.get("/v1/events", b)["data"] == []

    holding = api.client.patch(
        "/v1/metering_policy", json={"unknown_customer": "hold"}, headers=b.admin
    )
    assert holding.status_code == 200, holding.text
    assert outcomes("/v1/events", sent[1:2]) == [("held", None, None)]
    assert api.client.get("/v1/events/a-evt-1", headers=b.admin).status_code == 404
    assert outcomes("/v1/events", sent[:1]) == [("held", None, None)]  # not A's duplicate
    own = api.get("/v1/events/a-evt-1", b)
    assert (own["customer_ref"], own["customer_id"], own["status"]) == ("a-ext", None, "held")
    assert sorted(e["id"] for e in api.get("/v1/events", b)["data"]) == ["a-evt-1", "b-evt-1"]

    assert _snapshot(api, a, ids) == before
    theirs = api.get("/v1/events/a-evt-1", a)
    assert (theirs["customer_id"], theirs["status"]) == (ids["customer_id"], "accepted")
