"""Subscriptions read as they stand now — in test mode, at the test clock — and
per-subscription price overrides."""

from __future__ import annotations

from typing import Any

from ratecard.adapters.db.scope import Mode, Role
from tests.e2e.conftest import MAX, PRO, SEATS, Api, Tenant, customer_body


class InTestMode:
    """Calls with the tenant's test-mode admin key."""

    def __init__(self, api: Api, tenant: Tenant) -> None:
        self.api, self.headers = api, tenant.headers(Role.ADMIN, Mode.TEST)

    def post(self, path: str, body: Any = None) -> Any:
        response = self.api.client.post(path, json=body, headers=self.headers)
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    def get(self, path: str) -> Any:
        response = self.api.client.get(path, headers=self.headers)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def advance(self, to: str) -> None:
        assert self.post("/v1/test_clock/advance", {"to": to})["now_at"] == to


def _world(api: Api, *plans: dict[str, Any]) -> tuple[Tenant, InTestMode, str]:
    tenant = api.tenant()
    test = InTestMode(api, tenant)
    for plan in plans:
        test.post("/v1/plans", plan)
    return tenant, test, test.post("/v1/customers", customer_body())["id"]


def _state(sub: dict[str, Any]) -> tuple[Any, ...]:
    return (
        sub["status"],
        sub["plan_code"],
        sub["current_period_start_at"],
        sub["current_period_end_at"],
    )


def test_reads_replay_to_the_test_clock(api: Api) -> None:
    tenant, test, cus = _world(api, PRO, MAX)
    test.advance("2024-01-10T00:00:00Z")
    sub = test.post("/v1/subscriptions", {"customer_id": cus, "plan_code": "pro"})
    assert sub["anchor_at"] == "2024-01-10T00:00:00Z"  # the default start is the test clock's now
    sub_id = sub["id"]
    # Past a period end: the current period has renewed, without any write.
    test.advance("2024-02-20T00:00:00Z")
    got = test.get(f"/v1/subscriptions/{sub_id}")
    assert _state(got) == ("active", "pro", "2024-02-10T00:00:00Z", "2024-03-10T00:00:00Z")
    assert [_state(s) for s in test.get("/v1/subscriptions")["data"]] == [_state(got)]
    # A plan change at the period end, then past it: the pending change has taken effect.
    out = test.post(
        f"/v1/subscriptions/{sub_id}/change", {"plan_code": "max", "when": "period_end"}
    )
    assert out["subscription"]["pending_change"]["plan_code"] == "max"
    test.advance("2024-03-11T00:00:00Z")
    got = test.get(f"/v1/subscriptions/{sub_id}")
    assert _state(got) == ("active", "max", "2024-03-10T00:00:00Z", "2024-04-10T00:00:00Z")
    assert got["pending_change"] is None
    # A cancel at the period end, then past it: ended.
    test.post(f"/v1/subscriptions/{sub_id}/cancel", {"when": "period_end"})
    assert test.get(f"/v1/subscriptions/{sub_id}")["status"] == "active"
    test.advance("2024-04-10T00:00:00Z")
    got = test.get(f"/v1/subscriptions/{sub_id}")
    assert got["status"] == "ended"
    assert got["canceled_at"] == "2024-04-10T00:00:00Z"
    assert test.get("/v1/subscriptions?status=ended")["data"][0]["id"] == sub_id
    assert test.get("/v1/subscriptions?status=active")["data"] == []
    assert test.get("/v1/subscriptions?plan_code=pro")["data"] == []
    # Drafts default to the test clock's now: Jan 10, Feb 10, Mar 10 (the new plan).
    drafts = test.get(f"/v1/subscriptions/{sub_id}/drafts")["data"]
    billed = [(d["at"][:10], [line["amount"] for line in d["lines"]]) for d in drafts]
    assert billed[:3] == [
        ("2024-01-10", ["100.00"]),
        ("2024-02-10", ["100.00"]),
        ("2024-03-10", ["300.00"]),
    ]
    # Live mode runs on the real clock: the live world has not moved.
    assert api.get("/v1/subscriptions", tenant)["data"] == []


def test_trial_ends_on_the_test_clock_and_live_ignores_it(api: Api) -> None:
    tenant, test, cus = _world(api, PRO)
    sub = test.post("/v1/subscriptions", {"customer_id": cus, "plan_code": "pro", "trial_days": 14})
    assert sub["status"] == "trialing"
    test.advance("2024-01-20T00:00:00Z")
    assert test.get(f"/v1/subscriptions/{sub['id']}")["status"] == "active"
    # A live subscription stays trialing: the live clock (2024-01-01) has not moved.
    api.post("/v1/plans", tenant, PRO)
    live_cus = api.post("/v1/customers", tenant, customer_body())
    live = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": live_cus["id"], "plan_code": "pro", "trial_days": 14},
    )
    assert live["trial_ends_at"] == "2024-01-15T00:00:00Z"
    assert api.get(f"/v1/subscriptions/{live['id']}", tenant)["status"] == "trialing"


def test_previews_default_to_the_test_clock(api: Api) -> None:
    _tenant, test, cus = _world(api, PRO, MAX)
    sub = test.post("/v1/subscriptions", {"customer_id": cus, "plan_code": "pro"})
    test.advance("2024-01-15T00:00:00Z")
    preview = test.post(
        f"/v1/subscriptions/{sub['id']}/preview", {"action": "change_plan", "plan_code": "max"}
    )
    assert [line["amount"] for line in preview["lines"]] == ["-54.84", "164.52"]
    applied = test.post(f"/v1/subscriptions/{sub['id']}/change", {"plan_code": "max"})
    assert applied["lines"] == preview["lines"]


def _seat_amounts(api: Api, tenant: Tenant, sub_id: str) -> list[str]:
    drafts = api.get(f"/v1/subscriptions/{sub_id}/drafts", tenant)["data"]
    return [line["amount"] for line in drafts[0]["lines"]]


def test_overrides_on_create_change_the_rated_lines(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/plans", tenant, SEATS)
    cus = api.post("/v1/customers", tenant, customer_body())["id"]
    override = {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "7.50"}}
    body = {"customer_id": cus, "plan_code": "team", "quantity": 2}
    special = api.post("/v1/subscriptions", tenant, {**body, "price_overrides": [override]})
    plain = api.post("/v1/subscriptions", tenant, body)
    assert _seat_amounts(api, tenant, special["id"]) == ["15.00"]
    assert _seat_amounts(api, tenant, plain["id"]) == ["20.00"]
    start = api.get(f"/v1/subscriptions/{special['id']}/timeline", tenant)["data"][0]
    assert start["payload"]["price_overrides"] == [override]
    # The subscription's own override wins over the customer's; the customer's applies elsewhere.
    api.post(
        f"/v1/customers/{cus}/price_overrides",
        tenant,
        {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "9.00"}},
    )
    assert _seat_amounts(api, tenant, special["id"]) == ["15.00"]
    assert _seat_amounts(api, tenant, plain["id"]) == ["18.00"]
    # Changes are prorated at the overridden price: 2 -> 4 seats on Jan 16 (16 of 31 days).
    api.clock.set(api.clock.now().replace(day=16))
    preview = api.post(
        f"/v1/subscriptions/{special['id']}/preview",
        tenant,
        {"action": "change_quantity", "quantity": 4},
    )
    assert [line["amount"] for line in preview["lines"]] == ["-7.74", "15.48"]


def test_bad_overrides_name_the_field_and_create_nothing(api: Api) -> None:
    tenant = api.tenant()
    api.post("/v1/plans", tenant, SEATS)
    cus = api.post("/v1/customers", tenant, customer_body())["id"]
    body = {"customer_id": cus, "plan_code": "team"}
    cases = [
        (
            [{"plan_code": "team", "charge_code": "nope", "price": {"unit_price": "1.00"}}],
            ["body.price_overrides[0].charge_code"],
        ),
        (
            [{"plan_code": "team", "charge_code": "seats", "price": {"unit_price": 1.5}}],
            ["body.price_overrides[0].price.unit_price"],
        ),
        (
            [
                {"plan_code": "ghost", "charge_code": "seats", "price": {"amount": "1.00"}},
                {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "-1"}},
            ],
            ["body.price_overrides[0].plan_code", "body.price_overrides[1].price.unit_price"],
        ),
        (
            [
                {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "1"}},
                {"plan_code": "team", "charge_code": "seats", "price": {"unit_price": "2"}},
            ],
            ["body.price_overrides[1]"],
        ),
    ]
    for overrides, fields in cases:
        response = api.client.post(
            "/v1/subscriptions", json={**body, "price_overrides": overrides}, headers=tenant.admin
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert sorted(e["field"] for e in response.json()["errors"]) == fields, response.text
    assert api.get("/v1/subscriptions", tenant)["data"] == []
