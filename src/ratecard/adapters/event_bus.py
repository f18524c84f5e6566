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

After each commit that counted events, the consumer announces whose usage changed on the core
NATS subject ``<prefix>_usage_changed`` (beside the stream's subjects, so JetStream does not
store it), best effort, as ``{"tenant_id", "mode", "customer_ids"}``. API processes subscribe
(`LazyNatsBuffer.on_usage_changed`) and drop those customers' cached entitlements: the
listeners of the store run in the worker, not in them. A notice is not stored anywhere: one sent
while an API process was disconnected is lost, and its cached entries expire with their TTL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from ratecard.adapters.db.scope import Mode, TenantScope
from ratecard.adapters.usage_notices import (
    UsageListener,
    decode_usage_notice,
    usage_changed_subject,
    usage_notices,
)
from ratecard.core.errors import ErrorCode, RatecardError, ValidationFailed

log = logging.getLogger(__name__)

STREAM = "RATECARD_EVENTS"
SUBJECT_PREFIX = "ratecard.events"
DURABLE = "ratecard-ingest"
#: One message holds at most this many events and bytes (NATS refuses payloads over 1 MiB).
MAX_MESSAGE_EVENTS = 1000
MAX_MESSAGE_BYTES = 512 * 1024

#: How long the stream keeps messages (seconds); the store holds them after the ack.
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600
#: How often an API process checks that it still hears notices, and connects again if not.
LISTEN_RETRY_MS = 5000


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
            try:
                await js.add_stream(config)
            except BadRequestError:
                await js.stream_info(stream)
        except BaseException:  # no stream (JetStream off, a leader election): no connection left
            await nc.close()
            raise
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

    async def announce_usage_changed(self, scope: TenantScope, customer_ids: Sequence[str]) -> None:
        """Tell the API processes whose usage was stored; best effort: a failure is logged (the
        store committed, and the cached entries expire with their TTL anyway)."""
        import nats.errors

        subject = usage_changed_subject(self.subject_prefix)
        try:
            for data in usage_notices(scope, customer_ids):
                await self.nc.publish(subject, data)
        except (OSError, nats.errors.Error) as exc:
            log.warning("usage of %d customers not announced: %r", len(customer_ids), exc)

    async def on_usage_changed(self, listener: UsageListener) -> None:
        """Call `listener` in a worker thread for each notice, one at a time, in order. Returns
        once the server has the subscription (a notice published afterwards reaches it)."""

        async def handle(msg: Any) -> None:
            try:
                scope, customer_ids = decode_usage_notice(msg.data)
            except ValueError as exc:
                log.warning("ignoring a usage-changed notice that is not one: %r", exc)
                return
            await asyncio.to_thread(listener, scope, customer_ids)  # Redis would block the loop

        await self.nc.subscribe(usage_changed_subject(self.subject_prefix), cb=handle)
        await self.nc.flush(timeout=2)

    async def close(self) -> None:
        await self.nc.drain()  # unsubscribes, lets running listeners finish, then closes


class LazyNatsBuffer:
    """A `NatsBuffer` connected on first use (in the serving event loop), for the API.

    Publishing raises `BufferUnavailable` when NATS cannot be reached or does not confirm; a
    later publish connects again. Every connection subscribes the usage-changed listeners.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = STREAM,
        subject_prefix: str = SUBJECT_PREFIX,
        listen_retry_ms: int = LISTEN_RETRY_MS,
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.listen_retry_ms = listen_retry_ms
        self._buffer: NatsBuffer | None = None
        self._lock: asyncio.Lock | None = None
        self._listeners: list[UsageListener] = []
        self._keeper: asyncio.Task[None] | None = None

    async def _connected(self, listener: UsageListener | None = None) -> NatsBuffer:
        """The connection (made, with every listener subscribed, if there is none); subscribes
        `listener` too on a connection that was already there."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._buffer is not None and not self._buffer.nc.is_closed:
                if listener is not None:
                    await self._buffer.on_usage_changed(listener)
                return self._buffer
            buffer = await NatsBuffer.connect(
                self.url,
                stream=self.stream,
                subject_prefix=self.subject_prefix,
                reconnect_wait_ms=250,  # a request waits: fail fast, 503, retry
            )
            try:
                for each in self._listeners:
                    await buffer.on_usage_changed(each)
            except BaseException:
                await buffer.nc.close()
                raise
            self._buffer = buffer
            return buffer

    async def on_usage_changed(self, listener: UsageListener) -> None:
        """Hear usage-changed notices from now on (`NatsBuffer.on_usage_changed`), on this and
        every later connection. Connects now; when NATS cannot be reached that is logged, and
        the connection is tried again every `listen_retry_ms` until closed, so a process
        that publishes nothing still hears of usage after NATS came back."""
        import nats.errors

        self._listeners.append(listener)
        try:
            await self._connected(listener)
        except (OSError, nats.errors.Error) as exc:
            log.warning("not hearing of usage changes until NATS is reachable: %r", exc)
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep_listening())

    async def _keep_listening(self) -> None:
        import nats.errors

        # The client gives up after a few reconnect attempts and closes; connect again then.
        failing = False
        while True:
            await asyncio.sleep(self.listen_retry_ms / 1000)
            if self._buffer is not None and not self._buffer.nc.is_closed:
                continue
            try:
                await self._connected()
            except (OSError, nats.errors.Error) as exc:
                if not failing:  # once an outage, not every few seconds
                    log.warning("not hearing of usage changes, NATS unreachable: %r", exc)
                failing = True
            else:
                failing = False

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
        if self._keeper is not None:
            self._keeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._buffer is not None and not self._buffer.nc.is_closed:
            await self._buffer.close()
        self._buffer = None


class Stored(Protocol):
    """What ingesting a batch returns (`IngestResult`): the (customer, meter) pairs counted."""

    @property
    def touched(self) -> frozenset[tuple[str, str]]: ...


Ingest = Callable[[TenantScope, list[Any]], Stored]


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

    Each message is acked after `ingest` returned, i.e. after the store committed it; then the
    customers whose usage it counted are announced (`NatsBuffer.announce_usage_changed`).
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
                    stored = ingest(scope, events)
                except (ValidationFailed, ValueError, KeyError) as exc:
                    log.error("dropping a batch that cannot be ingested: %s", exc)
                    await msg.term()
                    continue
                except RatecardError as exc:
                    if exc.code is not ErrorCode.INGESTION_BUSY:
                        raise
                    log.warning("a batch waits: %s", exc)  # a meter being redefined
                    await msg.nak()  # redelivered; each try waits on the lock first
                    continue
                await msg.ack()
                handled += 1
                if stored.touched:
                    customer_ids = sorted({c for c, _ in stored.touched})
                    await buffer.announce_usage_changed(scope, customer_ids)
    finally:
        await subscription.unsubscribe()  # or draining the connection waits for it
    return handled
