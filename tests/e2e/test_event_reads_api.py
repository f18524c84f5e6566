"""GET /v1/events/{id} and GET /v1/events over HTTP, on both engines.

A stored event reads back as it was kept — timestamp in UTC, properties as exact text, its
customer and (when it came through one) its subscription — with ``accepted`` or ``held``; lists
run the latest received first with a cursor, and every bad query is a problem naming it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ratecard.adapters.db.scope import Mode, Role
from tests.e2e.conftest import Api, Tenant, customer_body

PLAN = {
    "code": "usage",
    "name": "Usage",
    "currency": "USD",
    "interval": "month",
    "charges": [{"code": "calls", "model": "per_unit", "meter": "calls", "unit_price": "0.50"}],
    "publish": True,
}


def _tenant(api: Api) -> tuple[Tenant, dict[str, Any], dict[str, Any]]:
    tenant = api.tenant()
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    api.post("/v1/meters", tenant, {"code": "tokens", "aggregation": "sum", "value_field": "n"})
    api.post("/v1/plans", tenant, PLAN)
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    sub = api.post(
        "/v1/subscriptions", tenant, {"customer_id": customer["id"], "plan_code": "usage"}
    )
    api.clock.advance(timedelta(days=3))  # events of the last three days are in the past
    return tenant, customer, sub


def _ingest(api: Api, tenant: Tenant, events: list[dict[str, Any]]) -> list[str]:
    body = api.post("/v1/events", tenant, events)
    return [r["status"] for r in body["results"]]


def test_an_event_reads_back_as_stored(api: Api) -> None:
    tenant, customer, sub = _tenant(api)
    statuses = _ingest(
        api,
        tenant,
        [
            {
                "id": "e-1",
                "type": "tokens",
                "customer": "acme",
                "timestamp": "2024-01-02T13:30:00.25+01:00",
                "properties": {"n": 0.1, "model": "gpt-x", "cached": True, "gone": None},
            },
            {"id": "by/sub 1", "type": "calls", "subscription": sub["id"]},
        ],
    )
    assert statuses == ["accepted", "accepted"]
    got = api.get("/v1/events/e-1", tenant)
    assert got == {
        "id": "e-1",
        "object": "event",
        "type": "tokens",
        "customer_ref": "acme",
        "customer_id": customer["id"],
        "subscription_id": None,
        "timestamp": "2024-01-02T12:30:00.250000Z",
        "properties": {"n": "0.1", "model": "gpt-x", "cached": "true"},  # exact text, no float
        "received_at": "2024-01-04T00:00:00Z",
        "status": "accepted",
        "livemode": True,
    }
    through = api.get("/v1/events/by/sub 1", tenant)  # any printable id, slashes included
    assert (through["customer_ref"], through["customer_id"], through["subscription_id"]) == (
        sub["id"],
        customer["id"],
        sub["id"],
    )
    assert through["timestamp"] == "2024-01-04T00:00:00Z"  # no timestamp: when received
    assert (
        api.client.post(  # ingestion beside the reads is unchanged: a retry is a duplicate
            "/v1/events",
            json={"id": "e-1", "type": "tokens", "customer": "acme", "properties": {"n": 0.1}},
            headers=tenant.admin,
        ).json()["results"][0]["status"]
        == "duplicate"
    )


def test_unknown_ids_roles_and_modes(api: Api) -> None:
    tenant, _, _ = _tenant(api)
    _ingest(api, tenant, [{"id": "e-1", "type": "calls", "customer": "acme"}])
    missing = api.client.get("/v1/events/e-2", headers=tenant.admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
    rejected = api.post("/v1/events", tenant, [{"id": "e-3", "type": "nope", "customer": "acme"}])
    assert rejected["rejected"] == 1
    assert api.client.get("/v1/events/e-3", headers=tenant.admin).status_code == 404  # not kept
    reader = api.client.get("/v1/events/e-1", headers=tenant.headers(Role.READ_ONLY))
    assert reader.status_code == 200 and reader.json()["status"] == "accepted"
    assert api.client.get("/v1/events/e-1", headers=tenant.headers(Role.INGEST)).status_code == 403
    assert api.client.get("/v1/events", headers=tenant.headers(Role.INGEST)).status_code == 403
    assert api.client.get("/v1/events/e-1").status_code == 401
    test_mode = api.client.get("/v1/events/e-1", headers=tenant.headers(Role.ADMIN, Mode.TEST))
    assert test_mode.status_code == 404
    too_long = api.client.get("/v1/events/" + "x" * 256, headers=tenant.admin)
    assert (too_long.status_code, too_long.json()["errors"][0]["field"]) == (422, "path.event_id")


def test_held_events_read_back_held_until_their_customer_exists(api: Api) -> None:
    tenant, _, _ = _tenant(api)
    patched = api.client.patch(
        "/v1/metering_policy", json={"unknown_customer": "hold"}, headers=tenant.admin
    )
    assert patched.status_code == 200
    assert _ingest(api, tenant, [{"id": "h-1", "type": "calls", "customer": "later"}]) == ["held"]
    held = api.get("/v1/events/h-1", tenant)
    assert (held["status"], held["customer_ref"], held["customer_id"]) == ("held", "later", None)
    later = api.post("/v1/customers", tenant, customer_body("later"))
    released = api.get("/v1/events/h-1", tenant)
    assert (released["status"], released["customer_id"]) == ("accepted", later["id"])


def _ids(page: dict[str, Any]) -> list[str]:
    return [e["id"] for e in page["data"]]


def test_lists_run_latest_first_with_a_cursor_and_filters(api: Api) -> None:
    tenant, customer, sub = _tenant(api)
    api.client.patch("/v1/metering_policy", json={"unknown_customer": "hold"}, headers=tenant.admin)
    day = "2024-01-0{}T10:00:00Z"
    _ingest(
        api, tenant, [{"id": "a", "type": "calls", "customer": "acme", "timestamp": day.format(2)}]
    )
    _ingest(
        api,
        tenant,
        [
            {
                "id": "c",
                "type": "tokens",
                "customer": "acme",
                "timestamp": day.format(1),
                "properties": {"n": "2"},
            },
            {"id": "b", "type": "calls", "subscription": sub["id"], "timestamp": day.format(3)},
        ],
    )  # one batch is stored in id order: b, then c
    _ingest(
        api, tenant, [{"id": "d", "type": "calls", "customer": "ghost", "timestamp": day.format(1)}]
    )

    everything = api.get("/v1/events", tenant)
    assert (_ids(everything), everything["has_more"], everything["next_cursor"]) == (
        ["d", "c", "b", "a"],
        False,
        None,
    )
    first = api.get("/v1/events?limit=3", tenant)
    assert (_ids(first), first["has_more"], first["next_cursor"]) == (["d", "c", "b"], True, "b")
    rest = api.get("/v1/events?limit=3&starting_after=b", tenant)
    assert (_ids(rest), rest["has_more"], rest["next_cursor"]) == (["a"], False, None)

    def listed(query: str) -> list[str]:
        return _ids(api.get(f"/v1/events?{query}", tenant))

    assert listed("status=held") == ["d"]
    assert listed("status=accepted") == ["c", "b", "a"]
    assert listed(f"customer_id={customer['id']}") == ["c", "b", "a"]
    assert listed("customer_ref=acme") == ["c", "a"]
    assert listed(f"customer_ref={sub['id']}") == ["b"]
    assert listed("customer_ref=ghost&status=held") == ["d"]
    assert listed("type=calls") == ["d", "b", "a"]
    assert listed("type=calls&status=accepted&limit=1&starting_after=b") == ["a"]
    assert listed("start_at=2024-01-02T00:00:00Z") == ["b", "a"]
    assert listed("end_at=2024-01-02T10:00:00Z") == ["d", "c"]  # half-open: a is at the end
    assert listed("start_at=2024-01-02T11:00:00%2B01:00&end_at=2024-01-03T00:00:00Z") == ["a"]
    assert listed("type=nope") == []
    assert api.get("/v1/events", api.tenant("Other"))["data"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=rejected", "query.status"),
        ("limit=0", "query.limit"),
        ("limit=101", "query.limit"),
        ("start_at=2024-01-02T00:00:00", "query.start_at"),  # no offset
        ("end_at=yesterday", "query.end_at"),
        ("start_at=2024-01-02T00:00:00Z&end_at=2024-01-01T00:00:00Z", "query.end_at"),
        ("starting_after=nope", "query.starting_after"),
        ("customer_id=" + "x" * 41, "query.customer_id"),
    ],
)
def test_bad_queries_are_problems_naming_the_parameter(api: Api, query: str, field: str) -> None:
    tenant, _, _ = _tenant(api)
    _ingest(api, tenant, [{"id": "e-1", "type": "calls", "customer": "acme"}])
    response = api.client.get(f"/v1/events?{query}", headers=tenant.admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
