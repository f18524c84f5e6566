"""An optional NATS JetStream buffer between the API and the event store.

    >>> buffer = await NatsBuffer.connect("nats://127.0.0.1:4222")      # doctest: +SKIP
    >>> await buffer.publish(scope, events, msg_id="9f86d0...")  # once JetStream stored them
    >>> await consume(buffer, ingestion.ingest)  # `ratecard worker --consume nats`

The API publishes the events of a request (native, already screened: see
`services.metering.buffered`) on ``ratecard.events.<tenant>.<mode>``, in messages of at most
`MAX_MESSAGE_EVENTS` events and `MAX_MESSAGE_BYTES` bytes, and acknowledges the client only
after every message's PubAck, i.e. once the stream (file storage) holds it. Each message carries
a deterministic ``Nats-Msg-Id`` (from the request's events and the message's place in it), so a
retried request within the stream's duplicate window (two minutes by default) is stored once;
after it, the store's dedup still counts every event once.

The consumer (a durable pull consumer) hands each message to `IngestionService.ingest` and acks
it only after the store committed; a crash in between redelivers the message (after the ack
wait), and the store's dedup per (tenant, mode, event id) reports its events as duplicates: each
counted once. A message that can never be ingested (a malformed body) is terminated rather than
redelivered forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.core.errors import ValidationFailed

log = logging.getLogger(__name__)

STREAM = "RATECARD_EVENTS"
SUBJECT_PREFIX = "ratecard.events"
DURABLE = "ratecard-ingest"
#: One message holds at most this many events and bytes (NATS refuses payloads over 1 MiB).
MAX_MESSAGE_EVENTS = 1000
MAX_MESSAGE_BYTES = 512 * 1024

#: How long the stream keeps messages (seconds); the store holds them after the ack.
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact text; stored properties are text anyway
    raise TypeError(f"{type(value).__name__} cannot travel in an event batch")


def encode_batch(scope: TenantScope, events: Sequence[Any]) -> bytes:
    body = {"tenant_id": scope.tenant_id, "mode": str(scope.mode), "events": list(events)}
    return json.dumps(body, default=_encode, separators=(",", ":"), sort_keys=True).encode()


def decode_batch(data: bytes) -> tuple[TenantScope, list[Any]]:
    body = json.loads(data, parse_float=Decimal)
    return TenantScope(body["tenant_id"], Mode(body["mode"])), list(body["events"])


def messages(scope: TenantScope, events: Sequence[Any]) -> list[bytes]:
    """The events as message bodies, in order, each within the message limits."""
    out: list[bytes] = []
    start = 0
    while start < len(events):
        end = min(len(events), start + MAX_MESSAGE_EVENTS)
        data = encode_batch(scope, events[start:end])
        while len(data) > MAX_MESSAGE_BYTES and end - start > 1:
            end = start + (end - start) // 2
            data = encode_batch(scope, events[start:end])
        out.append(data)
        start = end
    return out


class BufferUnavailable(Exception):
    """JetStream could not be reached, or did not confirm that it stored a message."""


@dataclass
class NatsBuffer:
    nc: Any
    js: Any
    stream: str = STREAM
    subject_prefix: str = SUBJECT_PREFIX

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        stream: str = STREAM,
        subject_prefix: str = SUBJECT_PREFIX,
        reconnect_wait_ms: int = 2000,
    ) -> NatsBuffer:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        nc = await nats.connect(
            url,
            connect_timeout=2,
            max_reconnect_attempts=3,
            reconnect_time_wait=reconnect_wait_ms / 1000,
        )
        js = nc.jetstream()
        config = StreamConfig(
            name=stream,
            subjects=[f"{subject_prefix}.>"],
            storage=StorageType.FILE,
            # Acked batches are in the store; keep a week of them for replay, then trim.
            max_age=STREAM_MAX_AGE_SECONDS,
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.stream_info(stream)
        return cls(nc, js, stream, subject_prefix)

    def subject(self, scope: TenantScope) -> str:
        return f"{self.subject_prefix}.{scope.tenant_id}.{scope.mode}"

    async def publish(
        self, scope: TenantScope, events: Sequence[Any], *, msg_id: str | None = None
    ) -> int:
        """Store the events in JetStream (one message or more); returns once all are stored.

        `msg_id` names the whole batch (default: a hash of it); message ``i`` of it is sent as
        ``<msg_id>-<i>``. Returns the stream sequence of the last message.
        """
        bodies = messages(scope, events)
        base = msg_id or hashlib.sha256(b"".join(bodies)).hexdigest()
        seq = 0
        for i, data in enumerate(bodies):
            ack = await self.js.publish(
                self.subject(scope), data, timeout=5, headers={"Nats-Msg-Id": f"{base}-{i}"}
            )
            seq = int(ack.seq)
        return seq

    async def close(self) -> None:
        await self.nc.drain()


class LazyNatsBuffer:
    """A `NatsBuffer` connected on first use (in the serving event loop), for the API.

    Publishing raises `BufferUnavailable` when NATS cannot be reached or does not confirm; a
    later publish connects again.
    """

    def __init__(
        self, url: str, *, stream: str = STREAM, subject_prefix: str = SUBJECT_PREFIX
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self._buffer: NatsBuffer | None = None
        self._lock: asyncio.Lock | None = None

    async def _connected(self) -> NatsBuffer:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._buffer is None or self._buffer.nc.is_closed:
                self._buffer = await NatsBuffer.connect(
                    self.url,
                    stream=self.stream,
                    subject_prefix=self.subject_prefix,
                    reconnect_wait_ms=250,  # a request waits: fail fast, 503, retry
                )
            return self._buffer

    async def publish(
        self, scope: TenantScope, events: Sequence[Any], *, msg_id: str | None = None
    ) -> int:
        import nats.errors

        try:
            buffer = await self._connected()
            return await buffer.publish(scope, events, msg_id=msg_id)
        except (OSError, nats.errors.Error) as exc:  # TimeoutError is an OSError
            raise BufferUnavailable(f"the event buffer did not store the events: {exc!r}") from exc

    async def close(self) -> None:
        if self._buffer is not None and not self._buffer.nc.is_closed:
            await self._buffer.close()
        self._buffer = None


Ingest = Callable[[TenantScope, list[Any]], object]


async def consume(
    buffer: NatsBuffer,
    ingest: Ingest,
    *,
    durable: str = DURABLE,
    batch: int = 16,
    idle_rounds: int | None = None,
    ack_wait_seconds: int = 30,
) -> int:
    """Ingest messages until stopped (or `idle_rounds` empty fetches in a row); return how many.

    Each message is acked after `ingest` returned, i.e. after the store committed it.
    """
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import ConsumerConfig

    subscription = await buffer.js.pull_subscribe(
        f"{buffer.subject_prefix}.>",
        durable=durable,
        stream=buffer.stream,
        config=ConsumerConfig(ack_wait=ack_wait_seconds, max_ack_pending=batch * 4),
    )
    handled = 0
    idle = 0
    try:
        while idle_rounds is None or idle < idle_rounds:
            try:
                messages = await subscription.fetch(batch, timeout=1)
            except (NatsTimeout, TimeoutError):  # nats-py raises either when nothing came
                idle += 1
                continue
            idle = 0
            for msg in messages:
                try:
                    scope, events = decode_batch(msg.data)
                    ingest(scope, events)
                except (ValidationFailed, ValueError, KeyError) as exc:
                    log.error("dropping a batch that cannot be ingested: %s", exc)
                    await msg.term()
                    continue
                await msg.ack()
                handled += 1
    finally:
        await subscription.unsubscribe()  # or draining the connection waits for it
    return handled
