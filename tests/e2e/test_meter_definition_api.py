"""A meter's definition over HTTP, on both engines: group-by dimensions at creation, and a
PATCH of aggregation, value field, filters or group-by that re-aggregates from raw events.

Five events of a ``tokens`` meter in January 2024 (the customer's first period)::

    t1  eu    model a   10
    t2  eu    model b    5
    t3  us    model a    7
    t4  us    model a    2.5
    t5  (no region)  model b    1

Summed by region: eu 15, us 9.5, no region 1, total 25.5 (2.55 at 0.10 a token). As the
maximum: eu 10, us 7, no region 1, total 10. The maximum of model ``a`` only: eu 10, us 7,
total 10 (three events). The same by model and region: (a, eu) 10, (a, us) 7. The unique count
of ``model``: 2. Each value below is checked against `_expected`, which computes it from the
raw events above, and against the figure written out.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from ratecard.adapters.db.scope import Role
from tests.e2e.conftest import Api, Tenant, customer_body

PERIOD_END = "2024-02-01T00:00:00Z"
METER = {"code": "tokens", "aggregation": "sum", "value_field": "tokens", "group_by": ["region"]}
PLAN = {
    "code": "tokens",
    "name": "Tokens",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "tok", "model": "per_unit", "meter": "tokens", "unit_price": "0.10"}],
    "entitlements": [{"feature": "cap", "type": "metered", "meter": "tokens", "limit": "12"}],
    "publish": True,
}
RAW = [  # (id, day, region, model, tokens)
    ("t1", 2, "eu", "a", "10"),
    ("t2", 3, "eu", "b", "5"),
    ("t3", 4, "us", "a", "7"),
    ("t4", 5, "us", "a", "2.5"),
    ("t5", 6, None, "b", "1"),
]
EVENTS = [
    {
        "id": event_id,
        "type": "tokens",
        "customer": "acme",
        "timestamp": f"2024-01-{day:02d}T10:30:00Z",
        "properties": {"model": model, "tokens": tokens}
        | ({} if region is None else {"region": region}),
    }
    for event_id, day, region, model, tokens in RAW
]

Groups = list[tuple[dict[str, str | None], str]]


def _expected(aggregation: str, filters: dict[str, str], group_by: list[str]) -> dict[str, Any]:
    """What a definition gives from `EVENTS`, computed here on its own (sum, max, unique)."""

    def value(events: list[dict[str, Any]]) -> Decimal:
        if aggregation == "unique_count":
            return Decimal(len({e["properties"]["model"] for e in events}))
        tokens = [Decimal(e["properties"]["tokens"]) for e in events]
        return sum(tokens, Decimal(0)) if aggregation == "sum" else max(tokens)

    kept = [e for e in EVENTS if all(e["properties"].get(k) == v for k, v in filters.items())]
    by_key: dict[tuple[str | None, ...], list[dict[str, Any]]] = {}
    for e in kept:
        by_key.setdefault(tuple(e["properties"].get(g) for g in group_by), []).append(e)
    groups = [
        (dict(zip(group_by, key, strict=True)), format(value(events), "f"))
        for key, events in sorted(by_key.items(), key=lambda kv: repr(kv[0]))
        if group_by  # no dimensions: the total alone
    ]
    return {"quantity": format(value(kept), "f"), "events": len(kept), "groups": groups}


def _setup(api: Api) -> tuple[Tenant, dict[str, Any], dict[str, Any], dict[str, Any]]:
    tenant = api.tenant()
    meter = api.post("/v1/meters", tenant, METER)
    api.post("/v1/plans", tenant, PLAN)
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    sub = api.post(
        "/v1/subscriptions",
        tenant,
        {"customer_id": customer["id"], "plan_code": "tokens", "start_at": "2024-01-01T00:00:00Z"},
    )
    api.clock.advance(timedelta(days=10))
    assert api.post("/v1/events", tenant, EVENTS)["accepted"] == 5
    return tenant, meter, customer, sub


def _patch(api: Api, tenant: Tenant, meter_id: str, body: Any, role: Role = Role.ADMIN) -> Any:
    return api.client.patch(f"/v1/meters/{meter_id}", json=body, headers=tenant.headers(role))


def _usage(api: Api, tenant: Tenant, customer_id: str) -> dict[str, Any]:
    """The usage API's view of the meter: quantity, events and groups."""
    (report,) = api.get(f"/v1/customers/{customer_id}/usage", tenant)["subscriptions"]
    (meter,) = report["meters"]
    groups = [(g["dimensions"], g["quantity"]) for g in meter["groups"]]
    return {"quantity": meter["quantity"], "events": meter["events"], "groups": groups}


def _billed(api: Api, tenant: Tenant, customer_id: str, sub_id: str) -> dict[str, Any]:
    """The usage API's amount, the closing draft's line and the entitlement's remainder."""
    (report,) = api.get(f"/v1/customers/{customer_id}/usage", tenant)["subscriptions"]
    drafts = api.get(f"/v1/subscriptions/{sub_id}/drafts?until_at={PERIOD_END}", tenant)["data"]
    closing = next(d for d in drafts if d["at"].startswith("2024-02-01"))
    (line,) = [line for line in closing["lines"] if line["kind"] == "usage"]
    cap = api.get(f"/v1/customers/{customer_id}/entitlements/cap", tenant)
    return {
        "usage": report["meters"][0]["amount"],
        "draft": (line["quantity"], line["amount"]),
        "cap": (cap["allowed"], cap["remaining"]),
    }


def test_a_meter_is_created_with_group_by_and_reports_each_group(api: Api) -> None:
    tenant, meter, customer, sub = _setup(api)
    assert (meter["group_by"], meter["filters"]) == (["region"], {})
    assert api.get(f"/v1/meters/{meter['id']}", tenant)["group_by"] == ["region"]
    plain = api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    assert plain["group_by"] == []
    listed = {m["code"]: m["group_by"] for m in api.get("/v1/meters", tenant)["data"]}
    assert listed == {"tokens": ["region"], "calls": []}

    usage = _usage(api, tenant, customer["id"])
    assert usage == {
        "quantity": "25.5",
        "events": 5,
        "groups": [({"region": "eu"}, "15"), ({"region": "us"}, "9.5"), ({"region": None}, "1")],
    }
    assert usage == _expected("sum", {}, ["region"])
    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": "2.55",
        "draft": ("25.5", "2.55"),
        "cap": (False, "0"),
    }


def test_changing_the_definition_reaggregates_from_raw_events(api: Api) -> None:
    tenant, meter, customer, sub = _setup(api)
    assert _billed(api, tenant, customer["id"], sub["id"])["cap"] == (False, "0")  # cached

    most = _patch(api, tenant, meter["id"], {"aggregation": "max"})
    assert most.status_code == 200, most.text
    assert (most.json()["aggregation"], most.json()["value_field"], most.json()["group_by"]) == (
        "max",
        "tokens",
        ["region"],
    )
    usage = _usage(api, tenant, customer["id"])
    assert usage == {
        "quantity": "10",
        "events": 5,
        "groups": [({"region": "eu"}, "10"), ({"region": "us"}, "7"), ({"region": None}, "1")],
    }
    assert usage == _expected("max", {}, ["region"])
    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": "1.00",
        "draft": ("10", "1.00"),
        "cap": (True, "2"),  # the entitlement cache heard the change
    }

    filtered = _patch(api, tenant, meter["id"], {"filters": {"model": "a"}})
    assert filtered.json()["filters"] == {"model": "a"}
    usage = _usage(api, tenant, customer["id"])
    assert usage == {
        "quantity": "10",
        "events": 3,
        "groups": [({"region": "eu"}, "10"), ({"region": "us"}, "7")],
    }
    assert usage == _expected("max", {"model": "a"}, ["region"])

    regrouped = _patch(api, tenant, meter["id"], {"group_by": ["model", "region"]})
    assert regrouped.json()["group_by"] == ["model", "region"]
    usage = _usage(api, tenant, customer["id"])
    assert usage["groups"] == [
        ({"model": "a", "region": "eu"}, "10"),
        ({"model": "a", "region": "us"}, "7"),
    ]
    assert usage == _expected("max", {"model": "a"}, ["model", "region"])

    # read from raw events (no rollups), then rolled up again from them
    unique = _patch(
        api,
        tenant,
        meter["id"],
        {"aggregation": "unique_count", "value_field": "model", "filters": {}, "group_by": []},
    )
    assert unique.status_code == 200, unique.text
    usage = _usage(api, tenant, customer["id"])
    assert usage == {"quantity": "2", "events": 5, "groups": []}
    assert usage == _expected("unique_count", {}, [])
    assert _billed(api, tenant, customer["id"], sub["id"]) == {
        "usage": "0.20",
        "draft": ("2", "0.20"),
        "cap": (True, "10"),
    }
    back = _patch(
        api,
        tenant,
        meter["id"],
        {"aggregation": "sum", "value_field": "tokens", "group_by": ["region"]},
    )
    assert back.status_code == 200, back.text
    assert _usage(api, tenant, customer["id"]) == _expected("sum", {}, ["region"])
    assert _billed(api, tenant, customer["id"], sub["id"])["draft"] == ("25.5", "2.55")
    series = api.get(
        f"/v1/customers/{customer['id']}/usage/series?meter=tokens&granularity=day", tenant
    )
    assert [p["quantity"] for p in series["data"][1:6]] == ["10", "5", "7", "2.5", "1"]


def test_a_patch_of_the_same_definition_or_only_the_name_keeps_the_usage(api: Api) -> None:
    tenant, meter, customer, _ = _setup(api)
    before = _usage(api, tenant, customer["id"])
    same = _patch(
        api, tenant, meter["id"], {"aggregation": "sum", "group_by": ["region"], "name": "Tok"}
    )
    assert same.status_code == 200, same.text
    assert (same.json()["name"], same.json()["code"]) == ("Tok", "tokens")
    assert _usage(api, tenant, customer["id"]) == before == _expected("sum", {}, ["region"])


def test_a_count_meter_given_a_value_aggregation_needs_a_value_field(api: Api) -> None:
    tenant = api.tenant()
    calls = api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    refused = _patch(api, tenant, calls["id"], {"aggregation": "sum", "group_by": ["region"]})
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [
        ("body.value_field", "invalid_value")
    ]
    unchanged = api.get(f"/v1/meters/{calls['id']}", tenant)
    assert (unchanged["aggregation"], unchanged["group_by"]) == ("count", [])
    made = _patch(api, tenant, calls["id"], {"aggregation": "sum", "value_field": "n"})
    assert (made.json()["aggregation"], made.json()["value_field"]) == ("sum", "n")
    # and back: a count meter may drop its value field
    counted = _patch(api, tenant, calls["id"], {"aggregation": "count", "value_field": None})
    assert (counted.json()["aggregation"], counted.json()["value_field"]) == ("count", None)


#: (bad part of a body, the field named, the problem's code): refused by POST and by PATCH.
BAD = [
    ({"aggregation": "median"}, "body.aggregation", "invalid_value"),
    ({"aggregation": "max", "value_field": None}, "body.value_field", "invalid_value"),
    ({"value_field": ""}, "body.value_field", "invalid_value"),
    ({"value_field": 1.5}, "body.value_field", "invalid_type"),
    ({"filters": {"model": 1.5}}, "body.filters.model", "invalid_type"),
    ({"filters": ["model"]}, "body.filters", "invalid_type"),
    ({"group_by": "region"}, "body.group_by", "invalid_type"),
    ({"group_by": ["region", "zone", "region"]}, "body.group_by", "invalid_value"),
    ({"group_by": [""]}, "body.group_by[0]", "invalid_value"),
    ({"group_by": ["region", 1.5]}, "body.group_by[1]", "invalid_type"),
    ({"group_by": [f"p{i}" for i in range(11)]}, "body.group_by", "invalid_value"),
]


@pytest.mark.parametrize(("bad", "field", "code"), BAD)
def test_a_bad_definition_is_a_problem_naming_the_field_and_changes_nothing(
    api: Api, bad: dict[str, Any], field: str, code: str
) -> None:
    tenant, meter, customer, _ = _setup(api)
    created = api.client.post(
        "/v1/meters", json={**METER, "code": "other", **bad}, headers=tenant.admin
    )
    assert created.status_code == 422, created.text
    assert created.headers["content-type"] == "application/problem+json"
    assert [(e["field"], e["code"]) for e in created.json()["errors"]] == [(field, code)]
    assert [m["code"] for m in api.get("/v1/meters", tenant)["data"]] == ["tokens"]

    before = (api.get(f"/v1/meters/{meter['id']}", tenant), _usage(api, tenant, customer["id"]))
    patched = _patch(api, tenant, meter["id"], {"name": "Renamed", **bad})
    assert patched.status_code == 422, patched.text
    assert patched.headers["content-type"] == "application/problem+json"
    assert [(e["field"], e["code"]) for e in patched.json()["errors"]] == [(field, code)]
    after = (api.get(f"/v1/meters/{meter['id']}", tenant), _usage(api, tenant, customer["id"]))
    assert after == before


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"aggregation": None}, "body.aggregation", "invalid_value"),
        ({"filters": None}, "body.filters", "invalid_value"),
        ({"group_by": None}, "body.group_by", "invalid_value"),
        ({"code": "renamed"}, "body.code", "unknown_field"),
        ({"reset": "never"}, "body.reset", "unknown_field"),
        ({"value_field": None}, "body.value_field", "invalid_value"),  # a sum needs one
    ],
)
def test_a_patch_refuses_nulls_the_code_and_the_reset(
    api: Api, body: dict[str, Any], field: str, code: str
) -> None:
    tenant, meter, customer, _ = _setup(api)
    before = (api.get(f"/v1/meters/{meter['id']}", tenant), _usage(api, tenant, customer["id"]))
    patched = _patch(api, tenant, meter["id"], {"group_by": ["model"], **body})
    assert patched.status_code == 422, patched.text
    assert [(e["field"], e["code"]) for e in patched.json()["errors"]] == [(field, code)]
    after = (api.get(f"/v1/meters/{meter['id']}", tenant), _usage(api, tenant, customer["id"]))
    assert after == before


def test_only_a_catalog_writer_redefines_a_meter(api: Api) -> None:
    tenant, meter, customer, _ = _setup(api)
    before = _usage(api, tenant, customer["id"])
    for role in (Role.READ_ONLY, Role.INGEST):
        denied = _patch(api, tenant, meter["id"], {"aggregation": "max"}, role)
        assert denied.status_code == 403, denied.text
    assert _patch(api, tenant, "mtr_nope", {"aggregation": "max"}).status_code == 404
    assert api.get(f"/v1/meters/{meter['id']}", tenant)["aggregation"] == "sum"
    assert _usage(api, tenant, customer["id"]) == before
