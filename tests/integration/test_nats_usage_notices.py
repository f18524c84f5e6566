"""An API process keeps hearing usage-changed notices: after a start without NATS, and after the
client gave up on a lost connection, whether or not it publishes anything meanwhile."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.event_bus import LazyNatsBuffer, NatsBuffer

NATS_URL = "nats://127.0.0.1:4222"
SCOPE = TenantScope("ten_a", Mode.LIVE)


async def _announcer(stream: str, prefix: str) -> NatsBuffer:
    try:
        return await NatsBuffer.connect(NATS_URL, stream=stream, subject_prefix=prefix)
    except (OSError, TimeoutError) as exc:  # no server here: the buffer is optional
        if os.environ.get("RATECARD_REQUIRE_SERVICES") == "1":
            pytest.fail(f"NATS unavailable: {exc}")
        pytest.skip(f"NATS unavailable: {exc}")


def test_a_listener_hears_notices_after_nats_came_back() -> None:
    tag = secrets.token_hex(4)
    stream, prefix = f"RC_NOTE_{tag}", f"rcnote.{tag}"

    async def scenario() -> None:
        announcer = await _announcer(stream, prefix)
        loop = asyncio.get_running_loop()
        heard: asyncio.Queue[tuple[TenantScope, tuple[str, ...]]] = asyncio.Queue()

        def listener(scope: TenantScope, customer_ids: tuple[str, ...]) -> None:
            loop.call_soon_threadsafe(heard.put_nowait, (scope, customer_ids))

        async def heard_after_announcing(customer_id: str) -> TenantScope:
            """Announce until the listener hears it (the lazy buffer reconnects on its own);
            the scope it heard. A late repeat of an earlier notice is passed over."""
            deadline = loop.time() + 10
            while True:
                await announcer.announce_usage_changed(SCOPE, [customer_id])
                try:
                    scope, customer_ids = await asyncio.wait_for(heard.get(), 0.1)
                except TimeoutError:
                    assert loop.time() < deadline, "the listener never heard a notice"
                    continue
                if customer_ids == (customer_id,):
                    return scope

        lazy = LazyNatsBuffer(
            "nats://127.0.0.1:1", stream=stream, subject_prefix=prefix, listen_retry_ms=20
        )
        try:
            await lazy.on_usage_changed(listener)  # unreachable: logged, not raised
            lazy.url = NATS_URL  # NATS is reachable now
            assert await heard_after_announcing("cus_1") == SCOPE

            # The client gave up reconnecting and closed; nothing is published meanwhile.
            assert lazy._buffer is not None
            await lazy._buffer.nc.close()
            assert await heard_after_announcing("cus_2") == SCOPE
        finally:
            await lazy.close()
            await announcer.js.delete_stream(stream)
            await announcer.close()
        assert lazy._buffer is None and lazy._keeper is None

    asyncio.run(scenario())
