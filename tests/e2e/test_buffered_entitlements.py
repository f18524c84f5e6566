"""With the JetStream buffer on, usage the worker stores reaches the API's entitlement cache.

The API (buffer on, the in-process cache) publishes the events; a worker with services of its
own (its own cache: the API's is reached only through NATS) consumes them, as
``ratecard worker --consume nats`` does, and announces whose usage changed. The API hears it
and drops those customers' cached entitlements: its next check counts the new usage. Against
the machine's NATS, on both engines; each test has a stream and subjects of its own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from ratecard.adapters.cache import InProcessCache
from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.event_bus import LazyNatsBuffer, NatsBuffer, consume
from ratecard.services.metering.entitlements import EntitlementService
from ratecard.services.metering.wiring import MeteringServices
from ratecard.web.app import create_app
from tests.e2e.conftest import START, Api, Tenant, customer_body
from tests.e2e.live import METERED
from tests.integration.conftest import Database

NATS_URL = "nats://127.0.0.1:4222"
HEARD_WITHIN_SECONDS = 5.0


@dataclass
class Drops:
    """Every drop of a cached customer in the API, in order; a test waits for the one it needs."""

    seen: list[tuple[TenantScope, str]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, scope: TenantScope, customer_id: str) -> None:
        with self.changed:
            self.seen.append((scope, customer_id))
            self.changed.notify_all()

    def forget(self) -> None:
        """Forget the drops so far (the routes that set a tenant up drop its customers too)."""
        with self.changed:
            self.seen.clear()

    def wait_for(self, scope: TenantScope, customer_id: str) -> None:
        with self.changed:
            heard = self.changed.wait_for(
                lambda: (scope, customer_id) in self.seen, timeout=HEARD_WITHIN_SECONDS
            )
        assert heard, f"the API never dropped {customer_id} of {scope}: {self.seen}"


@dataclass
class Split:
    """The API process and a worker process, in one test process."""

    api: Api
    worker: MeteringServices
    drops: Drops
    stream: str
    prefix: str

    def work(self) -> int:
        """Run the worker until the stream has nothing more for it; how many messages."""

        async def run() -> int:
            buffer = await NatsBuffer.connect(
                NATS_URL, stream=self.stream, subject_prefix=self.prefix
            )
            try:
                return await consume(buffer, self.worker.ingestion.ingest, idle_rounds=1)
            finally:
                await buffer.close()  # drains: the notices are sent

        return asyncio.run(run())

    def announce(self, notices: list[tuple[TenantScope, list[str]]]) -> None:
        """Publish notices as a worker would; returns once the server has routed them."""

        async def run() -> None:
            buffer = await NatsBuffer.connect(
                NATS_URL, stream=self.stream, subject_prefix=self.prefix
            )
            try:
                for scope, customer_ids in notices:
                    await buffer.announce_usage_changed(scope, customer_ids)
                await buffer.nc.flush(timeout=2)
            finally:
                await buffer.close()

        asyncio.run(run())


def _connect_or_skip(stream: str, prefix: str) -> None:
    async def run() -> None:
        buffer = await NatsBuffer.connect(NATS_URL, stream=stream, subject_prefix=prefix)
        await buffer.close()

    try:
        asyncio.run(run())
    except (OSError, TimeoutError) as exc:
        if os.environ.get("RATECARD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"NATS unavailable: {exc}")
        pytest.skip(f"NATS unavailable: {exc}")


@pytest.fixture
def split(api_database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Split]:
    tag = secrets.token_hex(4)
    stream, prefix = f"RC_ENT_{tag}", f"rcent.{tag}"
    _connect_or_skip(stream, prefix)  # makes the stream too
    clock = FixedClock(START)
    app = create_app(
        api_database.engine,
        clock,
        buffer=LazyNatsBuffer(NATS_URL, stream=stream, subject_prefix=prefix),
    )
    wiring = app.state.wiring
    entitlements: EntitlementService = wiring.metering.entitlements
    assert isinstance(entitlements.cache, InProcessCache)  # no Redis: only NATS can reach it
    drop, drops = entitlements.invalidate, Drops()

    def drop_and_record(scope: TenantScope, customer_id: str) -> None:
        drop(scope, customer_id)
        drops.record(scope, customer_id)

    monkeypatch.setattr(entitlements, "invalidate", drop_and_record)
    worker = MeteringServices.build(wiring.sessions, clock)  # a cache of its own
    with TestClient(app) as client:  # the lifespan subscribes before the first request
        api = Api(app, client, clock, wiring.sessions, api_database)
        yield Split(api, worker, drops, stream, prefix)

    async def delete() -> None:
        buffer = await NatsBuffer.connect(NATS_URL, stream=stream, subject_prefix=prefix)
        await buffer.js.delete_stream(stream)
        await buffer.close()

    asyncio.run(delete())


def _metered_customer(api: Api, name: str) -> tuple[Tenant, str]:
    """A tenant whose customer ``acme`` is on the metered plan (``api``: 3 calls a period)."""
    tenant = api.tenant(name)
    api.post("/v1/meters", tenant, {"code": "calls", "aggregation": "count"})
    api.post(
        "/v1/meters", tenant, {"code": "tokens", "aggregation": "sum", "value_field": "tokens"}
    )
    api.post("/v1/plans", tenant, METERED)
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    api.post("/v1/subscriptions", tenant, {"customer_id": customer["id"], "plan_code": "metered"})
    return tenant, str(customer["id"])


def _check(api: Api, tenant: Tenant, customer_id: str) -> tuple[bool, str, str]:
    body = api.get(f"/v1/customers/{customer_id}/entitlements/api", tenant)
    return body["allowed"], body["remaining"], body["source"]


def _calls(api: Api, tenant: Tenant, ids: list[str]) -> None:
    events = [{"id": i, "type": "calls", "customer": "acme"} for i in ids]
    response = api.client.post("/v1/events", json=events, headers=tenant.headers())
    assert response.status_code == 202, response.text
    assert response.json()["queued"] == len(ids)


def _cached(api: Api, tenant: Tenant, customer_id: str) -> None:
    """Check until the answer comes from the API's cache (a subscription drops it once)."""
    _check(api, tenant, customer_id)
    assert _check(api, tenant, customer_id) == (True, "3", "cache")


def test_usage_the_worker_stored_drops_the_apis_cached_entitlements(split: Split) -> None:
    api = split.api
    tenant, customer_id = _metered_customer(api, "Alpha")
    scope = TenantScope(tenant.id, Mode.LIVE)
    _cached(api, tenant, customer_id)
    split.drops.forget()

    _calls(api, tenant, ["c-1", "c-2"])
    # queued, not stored: the API's cache still has the old amount, rightly
    assert _check(api, tenant, customer_id) == (True, "3", "cache")
    assert split.drops.seen == []

    assert split.work() == 1
    split.drops.wait_for(scope, customer_id)

    assert split.drops.seen == [(scope, customer_id)]
    assert _check(api, tenant, customer_id) == (True, "1", "store")
    assert _check(api, tenant, customer_id) == (True, "1", "cache")

    # Only duplicates: nothing counted, nothing announced (its notice would come first).
    _calls(api, tenant, ["c-1"])
    _calls(api, tenant, ["c-2", "c-3"])  # one new event
    assert split.work() == 2
    with split.drops.changed:
        split.drops.changed.wait_for(lambda: len(split.drops.seen) == 2, HEARD_WITHIN_SECONDS)
    assert split.drops.seen == [(scope, customer_id)] * 2
    assert _check(api, tenant, customer_id) == (True, "0", "store")


def test_a_notice_drops_only_the_named_tenants_and_modes_customer(split: Split) -> None:
    api = split.api
    alpha, alpha_customer = _metered_customer(api, "Alpha")
    beta, beta_customer = _metered_customer(api, "Beta")
    alpha_test = TenantScope(alpha.id, Mode.TEST)
    beta_live = TenantScope(beta.id, Mode.LIVE)
    unknown = TenantScope("ten_unknown", Mode.LIVE)
    _cached(api, alpha, alpha_customer)
    _cached(api, beta, beta_customer)
    split.drops.forget()

    # Beta's tenant naming Alpha's customer, Alpha's test mode, a tenant nobody knows: each
    # drops a key nobody holds. Routed before the worker's notice (flushed), so heard before it.
    split.announce(
        [
            (beta_live, [alpha_customer]),
            (alpha_test, [alpha_customer]),
            (unknown, [alpha_customer, beta_customer]),
        ]
    )
    _calls(api, beta, ["b-1"])
    assert split.work() == 1
    split.drops.wait_for(beta_live, beta_customer)

    assert split.drops.seen == [
        (beta_live, alpha_customer),
        (alpha_test, alpha_customer),
        *((unknown, c) for c in sorted([alpha_customer, beta_customer])),  # a notice sorts
        (beta_live, beta_customer),
    ]
    assert _check(api, alpha, alpha_customer) == (True, "3", "cache")  # kept
    assert _check(api, beta, beta_customer) == (True, "2", "store")


def test_an_api_without_nats_still_starts_and_answers_checks(api_database: Database) -> None:
    """NATS unreachable at startup: logged, not fatal; checks are answered from the store."""
    clock = FixedClock(START)
    app = create_app(api_database.engine, clock, buffer=LazyNatsBuffer("nats://127.0.0.1:1"))
    with TestClient(app) as client:
        api = Api(app, client, clock, app.state.wiring.sessions, api_database)
        tenant, customer_id = _metered_customer(api, "Alpha")
        assert _check(api, tenant, customer_id) == (True, "3", "store")
