"""Ingestion through HTTP with the JetStream buffer on, against the machine's NATS, both engines.

The routes answer 202 with ``queued`` once JetStream stored the batch; a malformed body is still
a problem and publishes nothing; a retried request is one message (same ``Nats-Msg-Id``); the
consumer then stores every event exactly once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ratecard.adapters.clock import FixedClock
from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.event_bus import LazyNatsBuffer, NatsBuffer, consume
from ratecard.core.periods import Period
from ratecard.services.metering.group_commit import GroupCommitter
from ratecard.web.app import create_app
from tests.e2e.conftest import START, Api, customer_body
from tests.integration.conftest import Database

NATS_URL = "nats://127.0.0.1:4222"


@dataclass
class Buffered:
    api: Api
    stream: str
    prefix: str

    def drain(self) -> int:
        """Run the consumer until the stream has nothing more for it; how many messages."""
        ingest = self.api.app.state.wiring.metering.ingestion.ingest

        async def run() -> int:
            buffer = await NatsBuffer.connect(
                NATS_URL, stream=self.stream, subject_prefix=self.prefix
            )
            try:
                return await consume(buffer, ingest, idle_rounds=1)
            finally:
                await buffer.close()

        return asyncio.run(run())

    def messages(self) -> int:
        async def run() -> int:
            buffer = await NatsBuffer.connect(
                NATS_URL, stream=self.stream, subject_prefix=self.prefix
            )
            try:
                info = await buffer.js.stream_info(self.stream)
                return int(info.state.messages)
            finally:
                await buffer.close()

        return asyncio.run(run())


@pytest.fixture
def buffered(api_database: Database) -> Iterator[Buffered]:
    tag = secrets.token_hex(4)
    stream, prefix = f"RC_HTTP_{tag}", f"rchttp.{tag}"
    clock = FixedClock(START)
    app = create_app(
        api_database.engine,
        clock,
        buffer=LazyNatsBuffer(NATS_URL, stream=stream, subject_prefix=prefix),
    )
    with TestClient(app) as client:  # one event loop for the app's NATS connection
        api = Api(app, client, clock, app.state.wiring.sessions, api_database)
        made = Buffered(api, stream, prefix)
        try:
            made.messages()
        except (OSError, TimeoutError) as exc:
            if os.environ.get("RATECARD_REQUIRE_SERVICES") == "1":
                pytest.fail(f"NATS unavailable: {exc}")
            pytest.skip(f"NATS unavailable: {exc}")
        yield made

    async def delete() -> None:
        buffer = await NatsBuffer.connect(NATS_URL, stream=stream, subject_prefix=prefix)
        await buffer.js.delete_stream(stream)
        await buffer.close()

    asyncio.run(delete())


def _events(start: int, stop: int) -> list[dict[str, Any]]:
    return [
        {"id": f"b-{i}", "type": "tokens", "customer": "acme", "properties": {"tokens": f"{i}.5"}}
        for i in range(start, stop)
    ]


def test_events_through_the_buffer_are_stored_exactly_once(buffered: Buffered) -> None:
    api = buffered.api
    # the default writer (auto) starts no writer process: the routes publish, never store
    assert isinstance(api.app.state.wiring.metering.committer, GroupCommitter)
    tenant = api.tenant()
    api.post(
        "/v1/meters", tenant, {"code": "tokens", "aggregation": "sum", "value_field": "tokens"}
    )
    customer = api.post("/v1/customers", tenant, customer_body("acme"))
    ingest = tenant.headers()

    batch = [*_events(0, 300), _events(5, 6)[0], {"id": "bad", "type": "tokens"}]
    first = api.client.post("/v1/events", json=batch, headers=ingest)
    assert first.status_code == 202, first.text
    body = first.json()
    # the repeat of b-5 is queued too: the consumer's store counts one of them
    assert (body["queued"], body["duplicates"], body["rejected"], body["accepted"]) == (
        301,
        0,
        1,
        0,
    )
    assert body["results"][301]["code"] == "missing_field"  # no customer: refused at once
    retried = api.client.post("/v1/events", json=batch, headers=ingest)
    assert retried.json() == body  # same message id: JetStream keeps one copy

    malformed = api.client.post(
        "/v1/events", content=b'[{"id": "x"', headers={**ingest, "content-type": "application/json"}
    )
    assert (malformed.status_code, malformed.json()["errors"][0]["field"]) == (400, "body")
    lago = api.client.post(
        "/api/v1/events/batch",
        json={
            "events": [
                {
                    "transaction_id": f"b-{i}",
                    "code": "tokens",
                    "external_customer_id": "acme",
                    "properties": {"tokens": f"{i}.5"},
                }
                for i in range(250, 350)
            ]
        },
        headers=ingest,
    )
    assert lago.status_code == 202, lago.text
    assert {e["status"] for e in lago.json()["events"]} == {"queued"}
    assert buffered.messages() == 2  # the retry was not stored again; the malformed body never

    assert api.client.get("/v1/events/b-0", headers=ingest).status_code == 404  # still queued
    assert buffered.drain() == 2
    stored = api.client.get("/v1/events/b-0", headers=ingest)  # each queued event's outcome
    assert (stored.status_code, stored.json()["status"]) == (200, "accepted")
    assert stored.json()["properties"] == {"tokens": "0.5"}
    assert api.client.get("/v1/events/bad", headers=ingest).status_code == 404  # never stored
    with api.database.engine.connect() as connection:
        rows, distinct = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT event_id) FROM events WHERE tenant_id = :t"),
            {"t": tenant.id},
        ).one()
    assert rows == distinct == 350
    usage = api.app.state.wiring.metering.usage
    period = Period(START - timedelta(days=1), START + timedelta(days=1))
    total = usage.meter_usage(TenantScope(tenant.id, Mode.LIVE), customer["id"], "tokens", period)
    assert total.total.value == sum(Decimal(f"{i}.5") for i in range(350))
    # A retry after the consumer stored the events: queued again, and counted nothing more.
    again = api.client.post("/v1/events", json=_events(0, 10), headers=ingest)
    assert again.status_code == 202
    assert buffered.drain() == 1
    assert usage.meter_usage(
        TenantScope(tenant.id, Mode.LIVE), customer["id"], "tokens", period
    ).total.value == sum(Decimal(f"{i}.5") for i in range(350))


def test_no_buffer_is_a_503_problem_and_nothing_acknowledged(api_database: Database) -> None:
    app = create_app(
        api_database.engine, FixedClock(START), buffer=LazyNatsBuffer("nats://127.0.0.1:1")
    )
    with TestClient(app) as client:
        api = Api(app, client, FixedClock(START), app.state.wiring.sessions, api_database)
        tenant = api.tenant()
        response = client.post("/v1/events", json=_events(0, 1), headers=tenant.admin)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "event_buffer_unavailable"
