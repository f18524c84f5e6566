"""The JetStream buffer: acked batches are stored exactly once, even after a consumer crash."""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import pytest

from ratecard.adapters.event_bus import NatsBuffer, consume
from ratecard.core.periods import Period
from tests.integration.metering_setup import PERIOD_END, PERIOD_START, event, setup

NATS_URL = "nats://127.0.0.1:4222"


async def _buffer() -> NatsBuffer:
    tag = secrets.token_hex(4)
    try:
        return await NatsBuffer.connect(
            NATS_URL, stream=f"RC_TEST_{tag}", subject_prefix=f"rctest.{tag}"
        )
    except (OSError, TimeoutError) as exc:  # no server here: the buffer is optional
        if os.environ.get("RATECARD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"NATS unavailable: {exc}")
        pytest.skip(f"NATS unavailable: {exc}")


def _usage(m) -> int:
    period = Period(PERIOD_START, PERIOD_END)
    return int(m.usage.meter_usage(m.scope, m.customer_id, "api_calls", period).total.value)


def test_acked_batches_are_stored_once_after_a_crash_before_ack(sessions):
    m = setup(sessions)

    async def scenario() -> None:
        buffer = await _buffer()
        try:
            for start in range(0, 40, 10):
                await buffer.publish(m.scope, [event(i) for i in range(start, start + 10)])
            # a client retry of an acked batch: same body, same Nats-Msg-Id, stored once
            await buffer.publish(m.scope, [event(i) for i in range(0, 10)])
            # a batch overlapping others: its repeats are duplicates in the store
            await buffer.publish(m.scope, [event(i) for i in range(35, 45)])

            # the worker dies after the store committed the first batch, before its ack
            class Killed(BaseException):
                pass

            def killed(scope, events):
                m.ingestion.ingest(scope, events)
                raise Killed

            with pytest.raises(Killed):
                await consume(buffer, killed, durable="w", idle_rounds=2, ack_wait_seconds=1)
            # Redelivery waits for the ack deadline: poll (with a deadline) until all came back.
            handled = 0
            deadline = time.monotonic() + 30
            while handled < 5 and time.monotonic() < deadline:
                handled += await consume(
                    buffer, m.ingestion.ingest, durable="w", idle_rounds=1, ack_wait_seconds=1
                )
            assert handled == 5  # the unacked one came back, plus the four others
        finally:
            await buffer.js.delete_stream(buffer.stream)
            await buffer.close()

    asyncio.run(scenario())
    assert _usage(m) == 45
