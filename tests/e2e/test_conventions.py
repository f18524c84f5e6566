"""Conventions over HTTP: problems, idempotency, request ids, roles, audit, pagination, limits."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from ratecard.adapters.db.models import AuditEntryRow
from ratecard.adapters.db.scope import Mode, Role
from ratecard.services import audit
from ratecard.web.deps import RateLimit
from tests.e2e.conftest import PRO, Api, customer_body, make_api
from tests.integration.conftest import Database


def test_crud_values_and_pagination(api: Api) -> None:
    t = api.tenant()
    created = api.post(
        "/v1/customers",
        t,
        customer_body(
            "c1",
            email="billing@acme.test",
            country="de",
            currency="eur",
            timezone="Europe/Berlin",
            tax_ids=[{"type": "eu_vat", "value": "DE123456789"}],
            net_terms_days=15,
            billing_address={"line1": "Hauptstr. 1", "city": "Berlin", "country": "DE"},
        ),
    )
    assert (created["currency"], created["country"], created["net_terms_days"]) == ("EUR", "DE", 15)
    child = api.post("/v1/customers", t, customer_body("c2", parent_customer_id=created["id"]))
    got = api.get(f"/v1/customers/{child['id']}?expand=parent", t)
    assert got["parent"]["external_id"] == "c1"
    patched = api.client.patch(
        f"/v1/customers/{created['id']}", json={"name": "Acme GmbH"}, headers=t.admin
    )
    assert patched.status_code == 200 and patched.json()["name"] == "Acme GmbH"
    assert patched.json()["email"] == "billing@acme.test"  # untouched
    for i in range(3):
        api.post("/v1/customers", t, customer_body(f"p{i}"))
    first = api.get("/v1/customers?limit=2", t)
    assert len(first["data"]) == 2 and first["has_more"] is True
    seen = [c["id"] for c in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = api.get(f"/v1/customers?limit=2&starting_after={cursor}", t)
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert [c["external_id"] for c in api.get("/v1/customers?external_id=c2", t)["data"]] == ["c2"]
    coupon = api.post("/v1/coupons", t, {"code": "ten", "amount_off": "10.50", "currency": "usd"})
    assert (coupon["amount_off"], coupon["currency"]) == ("10.50", "USD")
    meter = api.post(
        "/v1/meters",
        t,
        {"code": "storage", "aggregation": "max", "value_field": "gb", "snapshot": True},
    )
    assert api.get(f"/v1/meters/{meter['id']}", t) == meter


def test_bad_input_is_a_problem_naming_the_field_and_changes_nothing(api: Api) -> None:
    t = api.tenant()
    bad = {**PRO, "charges": [{"code": "base", "model": "flatt", "amount": "1"}]}
    response = api.client.post("/v1/plans", json=bad, headers=t.admin)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/invalid_value") and problem["status"] == 422
    assert [e["field"] for e in problem["errors"]] == ["body.charges[0].model"]
    floats = {**PRO, "charges": [{"code": "base", "model": "flat", "amount": 100.5}]}
    problem = api.client.post("/v1/plans", json=floats, headers=t.admin).json()
    assert problem["errors"][0] == {
        "field": "body.charges[0].amount",
        "code": "float_not_allowed",
        "message": problem["errors"][0]["message"],
    }
    semantic = {**PRO, "charges": [{"code": "t", "model": "graduated", "tiers": [{"up_to": "10"}]}]}
    problem = api.client.post("/v1/plans", json=semantic, headers=t.admin).json()
    assert problem["errors"][0]["field"].startswith("body.charges[0].tiers")
    missing = api.client.post("/v1/customers", json={"name": "x"}, headers=t.admin).json()
    assert missing["errors"][0]["field"] == "body.external_id"
    assert missing["errors"][0]["code"] == "missing_field"
    assert api.get("/v1/plans", t)["data"] == [] and api.get("/v1/customers", t)["data"] == []
    assert api.client.get("/v1/nowhere", headers=t.admin).json()["code"] == "route_not_found"


def test_auth_and_roles(api: Api) -> None:
    t = api.tenant()
    none = api.client.get("/v1/customers")
    assert none.status_code == 401 and none.json()["code"] == "unauthenticated"
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert (
        api.client.get(
            "/v1/customers", headers={"Authorization": "Bearer rk_live_nope"}
        ).status_code
        == 401
    )
    read_only = t.headers(Role.READ_ONLY)
    assert api.client.get("/v1/customers", headers=read_only).status_code == 200
    denied = api.client.post("/v1/customers", json=customer_body(), headers=read_only)
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    ingest = t.headers(Role.INGEST)
    assert api.client.get("/v1/plans", headers=ingest).status_code == 403
    billing = t.headers(Role.BILLING)
    assert api.client.post("/v1/plans", json=PRO, headers=billing).status_code == 403
    assert (
        api.client.post("/v1/customers", json=customer_body(), headers=billing).status_code == 201
    )
    with api.sessions() as session:
        denials = (
            session.query(AuditEntryRow).filter_by(tenant_id=t.id, action="auth.denied").count()
        )
    assert denials == 3


def test_audit_chain_through_the_api_detects_edits_and_deletes(api: Api) -> None:
    t = api.tenant()
    cus = api.post("/v1/customers", t, customer_body())
    api.client.patch(f"/v1/customers/{cus['id']}", json={"name": "Renamed"}, headers=t.admin)
    assert audit.verify(api.sessions, t.id).ok
    with api.sessions() as session, session.begin():
        entry = (
            session.query(AuditEntryRow).filter_by(tenant_id=t.id, action="customer.updated").one()
        )
        entry.after = {**(entry.after or {}), "name": "Mallory"}
    report = audit.verify(api.sessions, t.id)
    assert not report.ok
    t2 = api.tenant("Other")
    api.post("/v1/customers", t2, customer_body())
    api.client.patch(f"/v1/customers/{cus['id']}", json={"name": "x"}, headers=t.admin)
    with api.sessions() as session, session.begin():
        first = (
            session.query(AuditEntryRow)
            .filter_by(tenant_id=t2.id)
            .order_by(AuditEntryRow.seq)
            .first()
        )
        assert first is not None
        session.delete(first)
    assert not audit.verify(api.sessions, t2.id).ok


def test_idempotency_key_replays_and_refuses_reuse(api: Api) -> None:
    t = api.tenant()
    headers = {**t.admin, "Idempotency-Key": "k-1", "X-Request-Id": "req-42"}
    first = api.client.post("/v1/customers", json=customer_body("i1"), headers=headers)
    assert first.status_code == 201 and first.headers["x-request-id"] == "req-42"
    again = api.client.post("/v1/customers", json=customer_body("i1"), headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = api.client.post("/v1/customers", json=customer_body("i2"), headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert len(api.get("/v1/customers", t)["data"]) == 1
    # Keys are per tenant and mode: the same key elsewhere is a new request.
    test_mode = {**t.headers(Role.ADMIN, Mode.TEST), "Idempotency-Key": "k-1"}
    assert (
        api.client.post("/v1/customers", json=customer_body("i1"), headers=test_mode).status_code
        == 201
    )
    assert "x-request-id" in api.client.get("/healthz").headers


def test_rate_limit_per_key(api_database: Database) -> None:
    limited = make_api(api_database, rate_limit=RateLimit(burst=3, per_second=1))
    t = limited.tenant()
    codes = [limited.client.get("/v1/customers", headers=t.admin).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    other = t.headers(Role.READ_ONLY)
    assert limited.client.get("/v1/customers", headers=other).status_code == 200
    problem = limited.client.get("/v1/customers", headers=t.admin)
    assert problem.json()["code"] == "rate_limited" and problem.headers["retry-after"] == "1"


def test_healthz_and_metrics(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    text = api.client.get("/metrics").text
    assert 'ratecard_http_requests_total{method="GET",route="/healthz",status="200"}' in text


# --- a real server: 50 concurrent identical POSTs with one key --------------------------------


@pytest.fixture
def server(api_database: Database) -> Iterator[tuple[str, Api]]:
    made = make_api(api_database)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        made.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", made
    finally:
        instance.should_exit = True
        thread.join(10)


def test_fifty_concurrent_posts_with_one_key_create_one_object(server: tuple[str, Api]) -> None:
    url, made = server
    t = made.tenant()
    headers = {**t.admin, "Idempotency-Key": "race-1"}
    barrier = threading.Barrier(50)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as client:
            barrier.wait()
            return client.post("/v1/customers", json=customer_body("race"), headers=headers)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, range(50)))
    codes = sorted({r.status_code for r in responses})
    assert set(codes) <= {201, 409}, [r.text for r in responses if r.status_code not in (201, 409)]
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    conflicts = [r.json()["code"] for r in responses if r.status_code == 409]
    assert set(conflicts) <= {"idempotency_key_in_use"}
    with httpx.Client(base_url=url) as client:
        listed = client.get("/v1/customers", headers=t.admin).json()["data"]
    assert [c["id"] for c in listed] == list(created)


def test_nul_characters_are_bad_input_not_server_errors(api: Api) -> None:
    t = api.tenant()
    query = api.client.get("/v1/coupons?starting_after=%00", headers=t.admin)
    assert query.status_code == 422 and query.json()["errors"][0]["field"] == "query"
    body = api.client.post("/v1/customers", json=customer_body("a\u0000b"), headers=t.admin)
    assert body.status_code == 422 and body.json()["errors"][0]["field"] == "body"
    assert api.get("/v1/customers", t)["data"] == []


def test_reads_answer_while_another_transaction_writes(api: Api) -> None:
    """A ``GET`` reads in a read-only unit of work: while another transaction holds SQLite's
    write lock (as an ingestion round does) or PostgreSQL's row lock on what it reads, the
    reads answer at once, with what was committed."""
    import sqlalchemy as sa

    t = api.tenant()
    customer = api.post("/v1/customers", t, customer_body(name="Before"))
    api.post("/v1/meters", t, {"code": "calls", "aggregation": "count"})
    api.post("/v1/plans", t, PRO)
    paths = [
        f"/v1/customers/{customer['id']}",
        "/v1/customers",
        "/v1/meters",
        "/v1/plans/pro",
        f"/v1/customers/{customer['id']}/usage",
        "/v1/events",
    ]
    expected = {path: api.get(path, t) for path in paths}
    with api.database.engine.begin() as writer:  # SQLite: BEGIN IMMEDIATE, the write lock
        writer.execute(
            sa.text("UPDATE customers SET name = 'Uncommitted' WHERE id = :id"),
            {"id": customer["id"]},
        )
        for path in paths:
            assert api.get(path, t) == expected[path], path
        assert api.get(paths[0], t)["name"] == "Before"
