"""An optional NATS JetStream buffer between the API and the event store.

    >>> buffer = await NatsBuffer.connect("nats://127.0.0.1:4222")      # doctest: +SKIP
    >>> await buffer.publish(scope, events)      # returns once JetStream has stored the batch
    >>> await consume(buffer, ingestion)         # `ratecard worker --consume nats`

The API publishes each accepted request body (its native events) as one message on
``ratecard.events.<tenant>.<mode>`` and acknowledges the client only after JetStream's PubAck,
i.e. once the stream (file storage) holds it. The message carries a ``Nats-Msg-Id`` (a hash of
the batch) so a retried publish within the stream's duplicate window is stored once.

The consumer (a durable pull consumer) hands each message to `IngestionService.ingest` and acks
it only after the store committed; a crash in between redelivers the message, and the store's
dedup per (tenant, mode, event id) reports the events as duplicates: each counted once. A message
that can never be ingested (a malformed body) is terminated rather than redelivered forever.
"""

from __future__ import annotations

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


@dataclass
class NatsBuffer:
    nc: Any
    js: Any
    stream: str = STREAM
    subject_prefix: str = SUBJECT_PREFIX

    @classmethod
    async def connect(
        cls, url: str, *, stream: str = STREAM, subject_prefix: str = SUBJECT_PREFIX
    ) -> NatsBuffer:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=3)
        js = nc.jetstream()
        config = StreamConfig(
            name=stream, subjects=[f"{subject_prefix}.>"], storage=StorageType.FILE
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.stream_info(stream)
        return cls(nc, js, stream, subject_prefix)

    def subject(self, scope: TenantScope) -> str:
        return f"{self.subject_prefix}.{scope.tenant_id}.{scope.mode}"

    async def publish(self, scope: TenantScope, events: Sequence[Any]) -> int:
        """Store one batch in JetStream; returns its stream sequence once stored."""
        data = encode_batch(scope, events)
        msg_id = hashlib.sha256(data).hexdigest()
        ack = await self.js.publish(
            self.subject(scope), data, timeout=5, headers={"Nats-Msg-Id": msg_id}
        )
        return int(ack.seq)

    async def close(self) -> None:
        await self.nc.drain()


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
