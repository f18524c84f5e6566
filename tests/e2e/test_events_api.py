"""Ingestion over HTTP with the real client libraries, against a live server, on both engines.

segment-analytics-python, the cloudevents SDK and lago-python-client send to a uvicorn server on
a free port (one per module and engine); every format deduplicates by its id, bad input is
reported per event or refused whole, and the usage endpoint, the invoice draft, entitlements and
alerts read the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from lago_python_client.client import Client as LagoClient
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models.event import BatchEvent, Event
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError

from ratecard.adapters.db.engine import make_session_factory
from ratecard.adapters.db.scope import Role
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.services.metering.policy import MeteringPolicy, Unknown, save_policy
from ratecard.services.tenancy import TenancyService
from tests.e2e.live import NOW, PERIOD_END, Live, Tenant, metered_tenant, serve
from tests.integration.conftest import Database

AT = NOW - timedelta(days=2)


@pytest.fixture(scope="module", params=["thread", "process"])
def live(api_database: Database, request: pytest.FixtureRequest) -> Iterator[Live]:
    """Every test here runs with the group commit in the API process and in a writer process
    of its own (`RATECARD_INGEST_WRITER=process`)."""
    with serve(api_database.engine, request.param) as server:
        yield server


@pytest.fixture
def tenant(live: Live) -> Tenant:
    return metered_tenant(live)


def native(i: int | str, meter: str = "calls", **props: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": f"n-{i}",
        "type": meter,
        "customer": "acme",
        "timestamp": AT.isoformat(),
    }
    if props:
        event["properties"] = props
    return event


def test_native_batch_reports_every_event_and_counts_each_once(tenant: Tenant) -> None:
    batch = [
        native(1),
        native(1),  # repeated within the batch
        native(2, "tokens", tokens=0.1),  # a JSON number: read as Decimal('0.1'), never float
        native(3, "tokens", tokens="0.0000000000000000000001"),
        {**native(4), "type": "nope"},
        {**native(5), "customer": "stranger"},
        {**native(6), "timestamp": "yesterday"},
        native(7, "tokens", tokens="many"),
    ]
    body = tenant.post("/v1/events", batch, role=Role.INGEST)
    statuses = [(r["status"], r.get("code"), r.get("field")) for r in body["results"]]
    assert statuses == [
        ("accepted", None, None),
        ("duplicate", None, None),
        ("accepted", None, None),
        ("accepted", None, None),
        ("rejected", "unknown_meter", "type"),
        ("rejected", "unknown_customer", "customer"),
        ("rejected", "invalid_value", "timestamp"),
        ("rejected", "invalid_value", "properties.tokens"),
    ]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 1, 4)
    again = tenant.post("/v1/events", [native(1), native(2, "tokens", tokens=0.1)], Role.INGEST)
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert tenant.usage() == {"calls": "1", "tokens": "0.1000000000000000000001"}


def test_a_malformed_body_is_refused_whole_and_writes_nothing(tenant: Tenant) -> None:
    with tenant.http(Role.INGEST) as client:
        cases = [
            (b'[{"id": "m-1", "type": "calls", "customer": "acme"}, {', 400, "malformed_body"),
            (b'"text"', 400, "malformed_body"),
            (b"[]", 400, "malformed_body"),
            (b"", 400, "malformed_body"),
            (json.dumps([native(i) for i in range(10_001)]).encode(), 422, "batch_too_large"),
        ]
        for body, status, code in cases:
            response = client.post(
                "/v1/events", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == status, (body[:40], response.text)
            problem = response.json()
            assert response.headers["content-type"] == "application/problem+json"
            assert (problem["code"], problem["errors"][0]["field"]) == (code, "body")
        read_only = client.post(
            "/v1/events",
            json=native(9),
            headers={"Authorization": f"Bearer {tenant.keys[Role.READ_ONLY]}"},
        )
        assert read_only.status_code == 403
        assert (
            client.post("/v1/events", json=native(9), headers={"Authorization": ""}).status_code
            == 401
        )
    assert tenant.usage() == {"calls": "0", "tokens": "0"}


def test_segment_library_sends_track_calls_with_the_write_key(tenant: Tenant) -> None:
    client = SegmentClient(
        write_key=tenant.ingest_key, host=tenant.live.url, sync_mode=True, max_retries=0
    )
    for _ in range(2):  # the same messageId twice: counted once
        client.track(user_id="acme", event="calls", message_id="seg-1", timestamp=AT, properties={})
    client.track(
        user_id="acme", event="tokens", message_id="seg-2", timestamp=AT, properties={"tokens": 7}
    )
    client.flush()
    assert tenant.usage() == {"calls": "1", "tokens": "7"}

    stranger = SegmentClient(write_key="rk_live_nope", host=tenant.live.url, sync_mode=True)
    with pytest.raises(APIError) as refused:
        stranger.track(user_id="acme", event="calls", message_id="seg-3", timestamp=AT)
    assert refused.value.status == 401

    with tenant.http(Role.INGEST) as http:
        single = http.post(
            "/v1/track",
            json={
                "event": "calls",
                "userId": "ghost",
                "messageId": "seg-4",
                "timestamp": AT.isoformat(),
            },
        )
    assert single.status_code == 422  # one event refused: a problem naming the body's field
    assert [(e["code"], e["field"]) for e in single.json()["errors"]] == [
        ("unknown_customer", "body.userId")
    ]


def _cloudevent(event_id: str, meter: str = "calls", **data: Any) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": event_id,
            "source": "tests",
            "type": meter,
            "subject": "acme",
            "time": AT,
            "specversion": "1.0",
        },
        data=data or None,
    )


def test_cloudevents_sdk_structured_binary_and_batch(tenant: Tenant) -> None:
    with tenant.http(Role.INGEST) as client:

        def send(message: Any) -> Any:
            response = client.post("/v1/events", content=message.body, headers=message.headers)
            assert response.status_code == 200, response.text
            return [r["status"] for r in response.json()["results"]]

        structured = ce_http.to_structured_event(_cloudevent("ce-1"))
        assert send(structured) == ["accepted"]
        assert send(structured) == ["duplicate"]
        binary = ce_http.to_binary_event(_cloudevent("ce-2", "tokens", tokens=5))
        assert send(binary) == ["accepted"]

        fmt = JSONFormat()
        batch = [
            json.loads(fmt.write(_cloudevent(i, "tokens", tokens=3)))
            for i in ("ce-3", "ce-3", "ce-2")
        ]
        batch.append({**batch[0], "id": "ce-4", "subject": "ghost"})
        response = client.post(
            "/v1/events",
            content=json.dumps(batch),
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
        results = response.json()["results"]
        assert [r["status"] for r in results] == ["accepted", "duplicate", "duplicate", "rejected"]
        assert results[3]["field"] == "subject"
    assert tenant.usage() == {"calls": "1", "tokens": "8"}


def test_one_event_refused_is_a_problem_naming_the_bodys_field(tenant: Tenant) -> None:
    """A body of one event answers as any bad request does: a 422 problem, each of its
    problems naming the field where the caller sent it (a binary CloudEvent's attributes in
    its ``ce-*`` headers, its data in the body). Nothing is stored; a batch answers per event."""
    with tenant.http(Role.INGEST) as client:

        def refused(response: Any) -> list[tuple[str, str]]:
            assert response.status_code == 422, response.text
            assert response.headers["content-type"] == "application/problem+json"
            return [(e["code"], e["field"]) for e in response.json()["errors"]]

        assert refused(client.post("/v1/events", json={**native(1), "customer": "ghost"})) == [
            ("unknown_customer", "body.customer")
        ]
        assert refused(client.post("/v1/events", json=native(2, "tokens", tokens="many"))) == [
            ("invalid_value", "body.properties.tokens")
        ]
        structured = ce_http.to_structured_event(_cloudevent("ce-9", "nope"))
        assert refused(
            client.post("/v1/events", content=structured.body, headers=structured.headers)
        ) == [("unknown_meter", "body.type")]
        binary = ce_http.to_binary_event(_cloudevent("ce-10", "tokens", tokens="x"))
        assert refused(client.post("/v1/events", content=binary.body, headers=binary.headers)) == [
            ("invalid_value", "body.tokens")
        ]
        late = ce_http.to_binary_event(_cloudevent("ce-11"))
        late.headers["ce-time"] = "yesterday"
        assert refused(client.post("/v1/events", content=late.body, headers=late.headers)) == [
            ("invalid_value", "header.ce-time")
        ]
        batch = client.post("/v1/events", json=[{**native(3), "customer": "ghost"}])
        assert batch.status_code == 200, batch.text
        assert batch.json()["results"][0]["status"] == "rejected"
    assert tenant.usage() == {"calls": "0", "tokens": "0"}


def test_lago_client_create_and_batch(tenant: Tenant) -> None:
    client = LagoClient(api_key=tenant.ingest_key, api_url=tenant.live.url)
    stamp = int(AT.timestamp())

    def event(tx: str, code: str = "calls", **props: Any) -> Event:
        return Event(
            transaction_id=tx,
            external_subscription_id=tenant.subscription_id,
            code=code,
            timestamp=stamp,
            properties=props or None,
        )

    created = client.events.create(event("lago-1"))
    assert created is not None and created.transaction_id == "lago-1"
    client.events.create(event("lago-1"))  # a retry: a duplicate, not an error
    client.events.batch_create(
        BatchEvent(events=[event("lago-2", "tokens", tokens="2.5"), event("lago-1")])
    )
    with pytest.raises(LagoApiError) as refused:
        client.events.create(
            Event(transaction_id="lago-3", external_subscription_id="sub_ghost", code="calls")
        )
    assert refused.value.status_code == 422
    assert tenant.usage() == {"calls": "1", "tokens": "2.5"}


def test_usage_matches_the_invoice_draft_lines(tenant: Tenant) -> None:
    events = [native(i) for i in range(7)]
    events += [native(f"t{i}", "tokens", tokens=f"{1000 + i}.5") for i in range(3)]
    tenant.post("/v1/events", events, Role.INGEST)
    report = tenant.get(f"/v1/customers/{tenant.customer_id}/usage")
    (sub,) = report["subscriptions"]
    amounts = {m["charge_code"]: m["amount"] for m in sub["meters"]}
    assert amounts == {"calls": "0.06", "tokens": "0.38"}  # (7-2)*0.0125; 3004.5*0.000125

    drafts = tenant.get(
        f"/v1/subscriptions/{tenant.subscription_id}/drafts?until_at="
        + PERIOD_END.isoformat().replace("+00:00", "Z")
    )["data"]
    closing = next(d for d in drafts if d["at"].startswith("2024-02-01"))
    usage_lines = {
        line["charge_code"]: line["amount"] for line in closing["lines"] if line["kind"] == "usage"
    }
    assert usage_lines == amounts
    quantities = {
        line["charge_code"]: line["quantity"]
        for line in closing["lines"]
        if line["kind"] == "usage"
    }
    assert quantities == {m["charge_code"]: m["quantity"] for m in sub["meters"]}

    series = tenant.get(
        f"/v1/customers/{tenant.customer_id}/usage/series?meter=tokens&granularity=day"
    )
    assert len(series["data"]) == 31
    day = AT.date().isoformat()
    assert [p["quantity"] for p in series["data"] if p["start_at"].startswith(day)] == ["3004.5"]

    # With rounding on, both read the same rounded quantity (the stored events stay exact).
    (tokens,) = [m for m in tenant.get("/v1/meters")["data"] if m["code"] == "tokens"]
    with tenant.http() as client:
        patched = client.patch(
            f"/v1/meters/{tokens['id']}", json={"rounding": {"mode": "up", "precision": 0}}
        )
    assert patched.status_code == 200, patched.text
    (sub,) = tenant.get(f"/v1/customers/{tenant.customer_id}/usage")["subscriptions"]
    rounded = {m["charge_code"]: (m["quantity"], m["amount"]) for m in sub["meters"]}
    assert rounded == {"calls": ("7", "0.06"), "tokens": ("3005", "0.38")}  # 3005 x 0.000125
    assert {m["charge_code"]: m["unrounded_quantity"] for m in sub["meters"]} == {
        "calls": "7",
        "tokens": "3004.5",
    }
    drafts = tenant.get(
        f"/v1/subscriptions/{tenant.subscription_id}/drafts?until_at="
        + PERIOD_END.isoformat().replace("+00:00", "Z")
    )["data"]
    closing = next(d for d in drafts if d["at"].startswith("2024-02-01"))
    lines = {
        line["charge_code"]: (line["quantity"], line["amount"])
        for line in closing["lines"]
        if line["kind"] == "usage"
    }
    assert lines == rounded


def test_entitlements_alerts_and_plan_changes(tenant: Tenant) -> None:
    base = f"/v1/customers/{tenant.customer_id}/entitlements"
    alert = tenant.post(
        "/v1/alerts", {"customer_id": tenant.customer_id, "meter": "calls", "threshold": "3"}
    )
    tenant.post("/v1/events", [native(i) for i in range(2)], Role.INGEST)
    check = tenant.get(f"{base}/api?requested=1")
    assert (check["allowed"], check["remaining"]) == (True, "1")
    assert tenant.get("/v1/webhook_events")["data"] == []

    tenant.post("/v1/events", [native(i) for i in range(2, 5)], Role.INGEST)  # crosses 3
    denied = tenant.get(f"{base}/api?requested=1")
    assert (denied["allowed"], denied["reason"], denied["remaining"]) == (
        False,
        "limit_exceeded",
        "0",
    )
    listed = {e["feature"]: e for e in tenant.get(base)["data"]}
    assert listed["api"]["usage"] == "5" and listed["sso"]["enabled"] is True
    tenant.post("/v1/events", [native(9)], Role.INGEST)  # still over: no second webhook
    (fired,) = tenant.get("/v1/webhook_events")["data"]
    assert fired["type"] == "usage_alert.triggered"
    assert fired["payload"]["alert_id"] == alert["id"]
    assert tenant.get(f"/v1/alerts/{alert['id']}")["threshold"] == "3"

    assert tenant.get(f"{base}/sso")["allowed"] is True  # now cached
    tenant.post(f"/v1/subscriptions/{tenant.subscription_id}/change", {"plan_code": "basic"})
    gone = tenant.get(f"{base}/sso")
    assert (gone["allowed"], gone["reason"]) == (False, "not_entitled")

    with tenant.http() as client:
        assert client.delete(f"/v1/alerts/{alert['id']}").status_code == 204
        assert client.get(f"/v1/alerts/{alert['id']}").status_code == 404
        bad = client.post(
            "/v1/alerts", json={"customer_id": tenant.customer_id, "meter": "x", "threshold": "1"}
        )
        assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, "body.meter")


def test_held_events_count_once_their_customer_exists(live: Live) -> None:
    tenant = metered_tenant(live, "Holding", customer="first")
    sessions = make_session_factory(live.engine)
    principal = TenancyService(sessions, live.clock).authenticate(tenant.keys[Role.ADMIN])
    assert principal is not None
    with UnitOfWork(sessions, principal.scope, actor="test", clock=live.clock) as uow:
        save_policy(uow.session, uow.scope, MeteringPolicy(unknown_customer=Unknown.HOLD))
        uow.commit()
    early = [{**native(i), "customer": "later"} for i in range(3)]
    body = tenant.post("/v1/events", early, Role.INGEST)
    assert [r["status"] for r in body["results"]] == ["held"] * 3
    later = tenant.post("/v1/customers", {"external_id": "later", "name": "Later"})
    tenant.post(
        "/v1/subscriptions",
        {"customer_id": later["id"], "plan_code": "metered", "start_at": "2024-01-01T00:00:00Z"},
    )
    report = tenant.get(f"/v1/customers/{later['id']}/usage")
    assert {m["meter"]: m["quantity"] for m in report["subscriptions"][0]["meters"]} == {
        "calls": "3",
        "tokens": "0",
    }
    again = tenant.post("/v1/events", early[:1], Role.INGEST)
    assert again["results"][0]["status"] == "duplicate"


def test_httpx_against_an_unknown_route_is_a_problem(live: Live) -> None:
    response = httpx.post(f"{live.url}/v1/eventz", json={})
    assert response.status_code == 404


def test_usage_amounts_follow_the_customers_price_overrides(tenant: Tenant) -> None:
    tenant.post(
        f"/v1/customers/{tenant.customer_id}/price_overrides",
        {"plan_code": "metered", "charge_code": "tokens", "price": {"unit_price": "0.001"}},
    )
    tenant.post("/v1/events", [native("o1", "tokens", tokens="2000")], Role.INGEST)
    (sub,) = tenant.get(f"/v1/customers/{tenant.customer_id}/usage")["subscriptions"]
    amounts = {m["charge_code"]: m["amount"] for m in sub["meters"]}
    assert amounts["tokens"] == "2.00"  # 2,000 x 0.001, not the plan's 0.000125
    drafts = tenant.get(
        f"/v1/subscriptions/{tenant.subscription_id}/drafts?until_at="
        + PERIOD_END.isoformat().replace("+00:00", "Z")
    )["data"]
    closing = next(d for d in drafts if d["at"].startswith("2024-02-01"))
    tokens = [line for line in closing["lines"] if line["charge_code"] == "tokens"]
    assert [line["amount"] for line in tokens] == ["2.00"]
