"""Usage-changed notices: their form, and the consumer announcing them without failing a store.

The consumer runs here on a fake JetStream (one fetch of the messages given, then nothing) and a
fake core connection that records or refuses what is published.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import pytest

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.event_bus import NatsBuffer, consume, encode_batch
from ratecard.adapters.usage_notices import (
    MAX_NOTICE_CUSTOMERS,
    decode_usage_notice,
    usage_changed_subject,
    usage_notices,
)
from ratecard.core.errors import RatecardError
from ratecard.services.metering.ingestion import MeterBeingRedefined

SCOPE = TenantScope("ten_a", Mode.LIVE)


def test_a_notice_names_the_scope_and_each_customer_once_in_order() -> None:
    [data] = usage_notices(SCOPE, ["cus_2", "cus_1", "cus_2"])
    assert decode_usage_notice(data) == (SCOPE, ("cus_1", "cus_2"))
    test_mode = TenantScope("ten_a", Mode.TEST)
    assert decode_usage_notice(usage_notices(test_mode, ["cus_1"])[0]) == (test_mode, ("cus_1",))


def test_many_customers_are_split_into_notices_of_at_most_the_limit() -> None:
    ids = [f"cus_{i:04d}" for i in range(2 * MAX_NOTICE_CUSTOMERS + 1)]
    decoded = [decode_usage_notice(data) for data in usage_notices(SCOPE, ids)]
    assert [len(customer_ids) for _, customer_ids in decoded] == [
        MAX_NOTICE_CUSTOMERS,
        MAX_NOTICE_CUSTOMERS,
        1,
    ]
    assert [c for _, customer_ids in decoded for c in customer_ids] == ids
    assert {scope for scope, _ in decoded} == {SCOPE}
    assert usage_notices(SCOPE, []) == []


def test_the_subject_is_outside_the_streams_subjects() -> None:
    # The stream takes ``<prefix>.>``: a notice there would be stored and consumed as a batch.
    assert usage_changed_subject("ratecard.events") == "ratecard.events_usage_changed"
    assert not usage_changed_subject("ratecard.events").startswith("ratecard.events.")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"mode": "live", "customer_ids": []}',
        b'{"tenant_id": "", "mode": "live", "customer_ids": []}',
        b'{"tenant_id": "ten_a", "customer_ids": ["cus_1"]}',
        b'{"tenant_id": "ten_a", "mode": "staging", "customer_ids": ["cus_1"]}',
        b'{"tenant_id": "ten_a", "mode": "live", "customer_ids": "cus_1"}',
        b'{"tenant_id": "ten_a", "mode": "live", "customer_ids": [1]}',
        b'{"tenant_id": 7, "mode": "live", "customer_ids": []}',
    ],
)
def test_what_is_not_a_notice_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_usage_notice(data)


def test_a_notice_naming_too_many_customers_is_refused() -> None:
    ids = ",".join(f'"cus_{i}"' for i in range(MAX_NOTICE_CUSTOMERS + 1))
    data = f'{{"tenant_id": "ten_a", "mode": "live", "customer_ids": [{ids}]}}'.encode()
    with pytest.raises(ValueError, match="at most"):
        decode_usage_notice(data)


# --- the consumer, on fakes ------------------------------------------------------------------


@dataclass
class FakeMsg:
    data: bytes
    outcome: list[str]

    async def ack(self) -> None:
        self.outcome.append("ack")

    async def term(self) -> None:
        self.outcome.append("term")

    async def nak(self) -> None:
        self.outcome.append("nak")


@dataclass
class FakeSubscription:
    rounds: list[list[FakeMsg]]

    async def fetch(self, batch: int, timeout: float) -> list[FakeMsg]:
        if not self.rounds:
            raise TimeoutError
        return self.rounds.pop(0)

    async def unsubscribe(self) -> None:
        pass


@dataclass
class FakeJetStream:
    subscription: FakeSubscription

    async def pull_subscribe(self, subject: str, **options: Any) -> FakeSubscription:
        return self.subscription


@dataclass
class FakeConnection:
    """Core NATS: records what is published, or refuses it as a closed connection does."""

    refuse: bool = False
    published: list[tuple[str, bytes]] = field(default_factory=list)

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        if self.refuse:
            raise nats.errors.ConnectionClosedError
        self.published.append((subject, payload))


@dataclass(frozen=True)
class FakeStored:
    touched: frozenset[tuple[str, str]]


@dataclass
class FakeStore:
    """Ingests by remembering the events; counts them for the customers of `touched`."""

    touched: frozenset[tuple[str, str]]
    stored: list[tuple[TenantScope, list[Any]]] = field(default_factory=list)

    def ingest(self, scope: TenantScope, events: list[Any]) -> FakeStored:
        self.stored.append((scope, events))
        return FakeStored(self.touched)


def _consume(nc: FakeConnection, store: FakeStore, bodies: list[bytes]) -> tuple[int, list[str]]:
    outcome: list[str] = []
    subscription = FakeSubscription([[FakeMsg(data, outcome) for data in bodies]])
    buffer = NatsBuffer(nc, FakeJetStream(subscription), "S", "rc.events")
    handled = asyncio.run(consume(buffer, store.ingest, idle_rounds=1))
    return handled, outcome


EVENT = {"id": "e1", "type": "calls", "customer": "acme"}
TOUCHED = frozenset({("cus_2", "calls"), ("cus_1", "calls"), ("cus_1", "tokens")})


def test_after_each_stored_batch_the_consumer_announces_its_customers() -> None:
    nc, store = FakeConnection(), FakeStore(TOUCHED)
    other = TenantScope("ten_b", Mode.TEST)

    handled, outcome = _consume(
        nc, store, [encode_batch(SCOPE, [EVENT]), encode_batch(other, [EVENT])]
    )

    assert (handled, outcome) == (2, ["ack", "ack"])
    assert [(subject, decode_usage_notice(data)) for subject, data in nc.published] == [
        ("rc.events_usage_changed", (SCOPE, ("cus_1", "cus_2"))),
        ("rc.events_usage_changed", (other, ("cus_1", "cus_2"))),
    ]


def test_a_batch_that_counted_nothing_announces_nothing() -> None:
    nc, store = FakeConnection(), FakeStore(frozenset())
    handled, outcome = _consume(nc, store, [encode_batch(SCOPE, [EVENT])])
    assert (handled, outcome, nc.published) == (1, ["ack"], [])
    assert store.stored == [(SCOPE, [EVENT])]


def test_a_failed_announcement_is_logged_and_fails_no_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nc, store = FakeConnection(refuse=True), FakeStore(TOUCHED)

    with caplog.at_level(logging.WARNING, logger="ratecard.adapters.event_bus"):
        handled, outcome = _consume(
            nc, store, [encode_batch(SCOPE, [EVENT]), encode_batch(SCOPE, [{**EVENT, "id": "e2"}])]
        )

    # both batches stored and acked: the consumer went on after the first failure
    assert (handled, outcome) == (2, ["ack", "ack"])
    assert store.stored == [(SCOPE, [EVENT]), (SCOPE, [{**EVENT, "id": "e2"}])]
    assert nc.published == []
    assert [r.getMessage() for r in caplog.records] == [
        "usage of 2 customers not announced: ConnectionClosedError()"
    ] * 2


def test_a_connection_without_its_stream_is_closed(monkeypatch):
    """Connected, but JetStream cannot give the stream (off, or electing a leader): the
    connection is closed before the error goes up, so a retry loop leaks none."""
    closed: list[bool] = []

    class FakeJetStream:
        async def add_stream(self, config):
            raise RuntimeError("jetstream not enabled")

    class FakeConnection:
        def jetstream(self):
            return FakeJetStream()

        async def close(self):
            closed.append(True)

    async def connect(*args, **kwargs):
        return FakeConnection()

    monkeypatch.setattr(nats, "connect", connect)
    with pytest.raises(RuntimeError, match="jetstream not enabled"):
        asyncio.run(NatsBuffer.connect("nats://127.0.0.1:4222"))
    assert closed == [True]


def test_a_batch_of_a_tenant_whose_meter_is_being_redefined_is_redelivered() -> None:
    """The store answers busy (`MeterBeingRedefined`): the message is nak'd, to come back,
    and the consumer goes on with the next one; other errors still stop it."""
    nc, store = FakeConnection(), FakeStore(TOUCHED)
    busy_scope = TenantScope("ten_busy", Mode.LIVE)

    def ingest(scope: TenantScope, events: list[Any]) -> FakeStored:
        if scope == busy_scope:
            raise MeterBeingRedefined()
        return store.ingest(scope, events)

    outcome: list[str] = []
    bodies = [encode_batch(busy_scope, [EVENT]), encode_batch(SCOPE, [EVENT])]
    subscription = FakeSubscription([[FakeMsg(data, outcome) for data in bodies]])
    buffer = NatsBuffer(nc, FakeJetStream(subscription), "S", "rc.events")
    handled = asyncio.run(consume(buffer, ingest, idle_rounds=1))
    assert (handled, outcome) == (1, ["nak", "ack"])
    assert store.stored == [(SCOPE, [EVENT])]

    def broken(scope: TenantScope, events: list[Any]) -> FakeStored:
        raise RatecardError("the store is down")

    subscription = FakeSubscription([[FakeMsg(bodies[1], [])]])
    buffer = NatsBuffer(nc, FakeJetStream(subscription), "S", "rc.events")
    with pytest.raises(RatecardError, match="the store is down"):
        asyncio.run(consume(buffer, broken, idle_rounds=1))
