"""Meter rounding over HTTP, on both engines: the meters API, and one rounded quantity for the
usage API, the invoice draft, entitlements, alerts and `ratecard simulate`.

A storage meter sums GB; two events of 1.25 and 0.8 GB make 2.05 GB, kept exactly in the store.
Rounded up to whole GB the period bills 3 GB (3.00 at 1.00 per GB); half-even to one place 2.0
(2.00, the tie goes to the even digit); half-up to one place 2.1 (2.10); without rounding 2.05.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ratecard.adapters.db.scope import Role
from ratecard.services.simulation import simulate
from tests.e2e.conftest import START, Api, Tenant, customer_body

PERIOD_END = "2024-02-01T00:00:00Z"
STORAGE_PLAN = {
    "code": "storage",
    "name": "Storage",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "gb", "model": "per_unit", "meter": "storage", "unit_price": "1.00"}],
    "entitlements": [{"feature": "space", "type": "metered", "meter": "storage", "limit": "2.5"}],
    "publish": True,
}
UP = {"mode": "up", "precision": 0}
EVENTS = [
    {
        "id": "s1",
        "type": "storage",
        "customer": "acme",
        "timestamp": "2024-01-05T10:00:00Z",
        "properties": {"gb": "1.25"},
    },
    {
        "id": "s2",
        "type": "storage",
        "customer": "acme",
        "timestamp": "2024-01-06T10:00:00Z",
        "properties": {"gb": "0.8"},
    },
]


def _meter(rounding: Any = UP) -> dict[str, Any]:
    body = {"code": "storage", "aggregation": "sum", "value_field": "gb"}
    return body if rounding is None else {**body, "rounding": rounding}


def _storage_tenant(api: Api) -> tuple[Tenant, dict[str, Any], dict[str, Any], dict[str, Any]]:
    tenant = api.tenant()
    meter = api.post("/v1/meters", tenant, _meter())
    api.post("/v1/plans", tenant, STORAGE_PLAN)
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    sub = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": customer["id"], "plan_code": "storage", "start_at": "2024-01-01T00:00:00Z"},
    )
    return tenant, meter, customer, sub


def _patch(api: Api, tenant: Tenant, meter_id: str, body: Any, role: Role = Role.ADMIN) -> Any:
    return api.client.patch(f"/v1/meters/{meter_id}", json=body, headers=tenant.headers(role))


def _billed(api: Api, tenant: Tenant, customer_id: str, sub_id: str) -> dict[str, Any]:
    """The usage API's and the closing draft's view of the storage charge."""
    (report,) = api.get(f"/v1/customers/{customer_id}/usage", tenant)["subscriptions"]
    (meter,) = report["meters"]
    drafts = api.get(f"/v1/subscriptions/{sub_id}/drafts?until_at={PERIOD_END}", tenant)["data"]
    closing = next(d for d in drafts if d["at"].startswith("2024-02-01"))
    (line,) = [line for line in closing["lines"] if line["kind"] == "usage"]
    return {
        "usage": (meter["quantity"], meter["unrounded_quantity"], meter["amount"]),
        "draft": (line["quantity"], line["amount"]),
    }


def test_meters_api_creates_reads_changes_and_removes_rounding(api: Api) -> None:
    tenant = api.tenant()
    made = api.post("/v1/meters", tenant, _meter({"mode": "half_even", "precision": 2}))
    assert made["rounding"] == {"mode": "half_even", "precision": 2}
    plain = api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    assert plain["rounding"] is None
    assert api.get(f"/v1/meters/{made['id']}", tenant)["rounding"] == made["rounding"]
    listed = {m["code"]: m["rounding"] for m in api.get("/v1/meters", tenant)["data"]}
    assert listed == {"storage": {"mode": "half_even", "precision": 2}, "calls": None}

    renamed = _patch(api, tenant, made["id"], {"name": "Storage (GB)"})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["rounding"]) == (
        "Storage (GB)",
        made["rounding"],
    )
    whole = _patch(api, tenant, made["id"], {"rounding": {"mode": "ceiling", "precision": 0}})
    assert whole.json()["rounding"] == {"mode": "ceiling", "precision": 0}
    exact = _patch(api, tenant, made["id"], {"rounding": None})
    assert (exact.json()["rounding"], exact.json()["name"]) == (None, "Storage (GB)")
    assert api.get(f"/v1/meters/{made['id']}", tenant)["rounding"] is None


@pytest.mark.parametrize(
    ("rounding", "field"),
    [
        ({"mode": "up", "precision": -1}, "body.rounding.precision"),
        ({"mode": "up", "precision": 19}, "body.rounding.precision"),
        ({"mode": "up", "precision": "2"}, "body.rounding.precision"),
        ({"mode": "up", "precision": 2.0}, "body.rounding.precision"),  # a JSON float
        ({"mode": "up"}, "body.rounding.precision"),
        ({"mode": "nearest", "precision": 2}, "body.rounding.mode"),
        ({"mode": "up", "precision": 0, "step": 5}, "body.rounding.step"),
        ("up", "body.rounding"),
    ],
)
def test_bad_rounding_is_a_problem_naming_the_field(api: Api, rounding: Any, field: str) -> None:
    tenant = api.tenant()
    created = api.client.post("/v1/meters", json=_meter(rounding), headers=tenant.admin)
    assert created.status_code == 422, created.text
    assert created.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in created.json()["errors"]] == [field]
    assert api.get("/v1/meters", tenant)["data"] == []  # nothing written

    meter = api.post("/v1/meters", tenant, _meter(None))
    patched = _patch(api, tenant, meter["id"], {"rounding": rounding})
    assert patched.status_code == 422, patched.text
    assert [e["field"] for e in patched.json()["errors"]] == [field]
    assert api.get(f"/v1/meters/{meter['id']}", tenant)["rounding"] is None


def test_meter_patch_refuses_null_names_strangers_and_readers(api: Api) -> None:
    tenant = api.tenant()
    meter = api.post("/v1/meters", tenant, _meter())
    null_name = _patch(api, tenant, meter["id"], {"name": None, "colour": "red"})
    assert null_name.status_code == 422
    assert {e["field"] for e in null_name.json()["errors"]} == {"body.name", "body.colour"}
    assert _patch(api, tenant, "mtr_nope", {"name": "x"}).status_code == 404
    for role in (Role.READ_ONLY, Role.INGEST):
        assert _patch(api, tenant, meter["id"], {"rounding": None}, role).status_code == 403
    assert api.get(f"/v1/meters/{meter['id']}", tenant)["rounding"] == UP


def test_usage_draft_entitlement_and_alert_read_one_rounded_quantity(api: Api) -> None:
    tenant, meter, customer, sub = _storage_tenant(api)
    api.clock.advance(timedelta(days=10))
    alert = api.post(
        "/v1/alerts", tenant, {"customer_id": customer["id"], "meter": "storage", "threshold": "3"}
    )
    space = f"/v1/customers/{customer['id']}/entitlements/space"
    assert api.get(space, tenant)["allowed"] is True  # cached: no usage yet
    body = api.post("/v1/events", tenant, EVENTS)
    assert body["accepted"] == 2

    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": ("3", "2.05", "3.00"),
        "draft": ("3", "3.00"),
    }
    check = api.get(space, tenant)  # 3 GB used of 2.5: over
    assert (check["allowed"], check["reason"], check["remaining"]) == (
        False,
        "limit_exceeded",
        "0",
    )
    (fired,) = api.get("/v1/webhook_events", tenant)["data"]  # 3 reached; 2.05 would not be
    assert (fired["payload"]["alert_id"], fired["payload"]["value"]) == (alert["id"], "3")

    half_even = _patch(
        api, tenant, meter["id"], {"rounding": {"mode": "half_even", "precision": 1}}
    )
    assert half_even.status_code == 200, half_even.text
    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": ("2", "2.05", "2.00"),
        "draft": ("2", "2.00"),
    }
    check = api.get(space, tenant)  # the cache heard the change
    assert (check["allowed"], check["remaining"]) == (True, "0.5")

    _patch(api, tenant, meter["id"], {"rounding": {"mode": "half_up", "precision": 1}})
    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": ("2.1", "2.05", "2.10"),
        "draft": ("2.1", "2.10"),
    }
    _patch(api, tenant, meter["id"], {"rounding": None})
    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": ("2.05", "2.05", "2.05"),
        "draft": ("2.05", "2.05"),
    }
    series = api.get(
        f"/v1/customers/{customer['id']}/usage/series?meter=storage&granularity=day", tenant
    )  # a chart shows each day's exact usage
    assert [p["quantity"] for p in series["data"][4:6]] == ["1.25", "0.8"]


def test_simulate_rounds_the_meter_as_the_api_does(api: Api) -> None:
    tenant, _, customer, sub = _storage_tenant(api)
    api.clock.advance(timedelta(days=10))
    api.post("/v1/events", tenant, EVENTS)
    scenario = {
        "meters": [{"code": "storage", "property": "gb", "rounding": UP}],
        "plans": [{k: v for k, v in STORAGE_PLAN.items() if k != "publish"}],
        "customer": {"id": "acme", "currency": "USD"},
        "subscription": {"plan": "storage", "start": START.isoformat()},
        "events": [
            {
                "id": e["id"],
                "meter": "storage",
                "timestamp": e["timestamp"],
                "value": e["properties"]["gb"],
            }
            for e in EVENTS
        ],
        "end": PERIOD_END,
    }
    simulated = [
        (str(line.quantity), line.amount.format())
        for invoice in simulate(scenario).invoices
        for line in invoice.lines
        if str(line.kind) == "usage"
    ]
    assert simulated == [("3", "3.00")]
    assert [_billed(api, tenant, customer["id"], sub["id"])["draft"]] == simulated


def test_simulate_names_a_bad_meter_rounding() -> None:
    from ratecard.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as refused:
        simulate(
            {
                "meters": [
                    {
                        "code": "storage",
                        "property": "gb",
                        "rounding": {"mode": "up", "precision": -2},
                    }
                ],
                "plans": [{k: v for k, v in STORAGE_PLAN.items() if k != "publish"}],
                "subscription": {"plan": "storage", "start": START.isoformat()},
                "end": PERIOD_END,
            }
        )
    assert [p.field for p in refused.value.problems] == ["meters[0].rounding.precision"]
