"""kill -9 the NATS consumer mid-stream; after a restart every acknowledged event is stored once.

A publisher stores batches in JetStream (an event is acknowledged once its PubAck came back),
retrying some of them (same ``Nats-Msg-Id``) and repeating events across batches. A real
``ratecard worker --consume nats`` subprocess writes them to the engine's database; the test
kills it with SIGKILL while it works through the first half, starts it again, publishes the
second half, and waits (with a deadline) until the consumer has nothing pending. Then the store
holds every acknowledged event exactly once (rows == distinct ids) and the usage sum is exact.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from ratecard.adapters.clock import SystemClock
from ratecard.adapters.db.engine import make_session_factory
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.event_bus import NatsBuffer
from ratecard.core.events import format_timestamp
from ratecard.core.periods import Period
from ratecard.services.metering.usage import UsageService
from tests.e2e.live import wait_until
from tests.e2e.test_crash import SRC, _tenant
from tests.integration.conftest import Database

NATS_URL = "nats://127.0.0.1:4222"
BATCHES = 200  # half before the kill, half after the restart
PER_BATCH = 400
KILL_AT_ROWS = 1000  # stored rows when the worker is killed (the first half holds 40,000)


def _value(i: int) -> str:
    return f"{i % 7 + 1}.25"


def _batch(n: int, at: str) -> list[dict[str, Any]]:
    events = [
        {
            "id": f"nc-{n}-{i}",
            "type": "tokens",
            "customer": "acme",
            "timestamp": at,
            "properties": {"tokens": _value(i)},
        }
        for i in range(PER_BATCH)
    ]
    if n:  # events of the batch before, sent again: duplicates in the store
        events += [{**e, "id": f"nc-{n - 1}-{e['id'].rsplit('-', 1)[1]}"} for e in events[:25]]
    return events


def _worker(url: str, stream: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RATECARD_DATABASE_URL": url, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-c", "from ratecard.cli import app; app()", "worker"]
    command += ["--consume", "nats", "--nats-url", NATS_URL, "--stream", stream]
    command += ["--subject-prefix", prefix, "--ack-wait", "2"]
    return subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)


def _rows(database: Database, tenant_id: str) -> tuple[int, int]:
    with database.engine.connect() as connection:
        rows, distinct = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT event_id) FROM events WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).one()
    return int(rows), int(distinct)


class Publisher:
    """Publishes in its own event loop (the test's thread drives the worker meanwhile)."""

    def __init__(self, scope: TenantScope, stream: str, prefix: str) -> None:
        self.scope, self.stream, self.prefix = scope, stream, prefix
        self.loop = asyncio.new_event_loop()
        self.buffer: NatsBuffer | None = None
        self.acked = 0

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def connect(self) -> None:
        try:
            self.buffer = self.run(
                NatsBuffer.connect(NATS_URL, stream=self.stream, subject_prefix=self.prefix)
            )
        except (OSError, TimeoutError) as exc:
            if os.environ.get("RATECARD_REQUIRE_SERVICES") == "1":
                pytest.fail(f"NATS unavailable: {exc}")
            pytest.skip(f"NATS unavailable: {exc}")

    def publish(self, batches: range, at: str) -> None:
        assert self.buffer is not None
        for n in batches:
            events = _batch(n, at)
            self.run(self.buffer.publish(self.scope, events, msg_id=f"batch-{n}"))
            if n % 4 == 0:  # the client did not see the PubAck and sends the batch again
                self.run(self.buffer.publish(self.scope, events, msg_id=f"batch-{n}"))
            self.acked += 1

    def pending(self) -> int:
        assert self.buffer is not None
        info = self.run(self.buffer.js.consumer_info(self.stream, "ratecard-ingest"))
        return int(info.num_pending) + int(info.num_ack_pending)

    def close(self) -> None:
        if self.buffer is not None:
            self.run(self.buffer.js.delete_stream(self.stream))
            self.run(self.buffer.close())
        self.loop.close()


def test_kill_9_of_the_consumer_loses_and_doubles_nothing(api_database: Database) -> None:
    scope, _key, customer_id = _tenant(api_database)
    tag = secrets.token_hex(4)
    stream, prefix = f"RC_CRASH_{tag}", f"rccrash.{tag}"
    publisher = Publisher(scope, stream, prefix)
    publisher.connect()
    at = format_timestamp(SystemClock().now())
    half = BATCHES // 2
    worker = None
    try:
        publisher.publish(range(half), at)
        worker = _worker(api_database.url, stream, prefix)
        wait_until(lambda: _rows(api_database, scope.tenant_id)[0] >= KILL_AT_ROWS, seconds=30)
        worker.send_signal(signal.SIGKILL)  # mid-batch or between: nothing acked is lost
        worker.wait(10)
        stored_at_kill = _rows(api_database, scope.tenant_id)[0]
        assert stored_at_kill < half * PER_BATCH, "killed mid-stream"
        worker = _worker(api_database.url, stream, prefix)
        publisher.publish(range(half, BATCHES), at)
        deadline = time.monotonic() + 45
        while _rows(api_database, scope.tenant_id)[0] < BATCHES * PER_BATCH or publisher.pending():
            assert time.monotonic() < deadline, "the restarted worker did not catch up"
            assert worker.poll() is None, "the worker died"
            time.sleep(0.05)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        publisher.close()

    assert publisher.acked == BATCHES
    assert _rows(api_database, scope.tenant_id) == (BATCHES * PER_BATCH, BATCHES * PER_BATCH)
    now = SystemClock().now()
    usage = UsageService(make_session_factory(api_database.engine), SystemClock())
    period = Period(now - timedelta(days=1), now + timedelta(days=1))
    total = usage.meter_usage(scope, customer_id, "tokens", period).total.value
    assert total == BATCHES * sum(Decimal(_value(i)) for i in range(PER_BATCH))
