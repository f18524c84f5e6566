"""Ingestion through the JetStream buffer: screen the events, publish them, answer "queued".

    >>> queue = BufferedIngestion(LazyNatsBuffer(url), clock)              # doctest: +SKIP
    >>> result = await queue.ingest(scope, [ok, {"id": "e2"}])               # doctest: +SKIP
    >>> [r.status for r in result.results]                                  # doctest: +SKIP
    ['queued', 'rejected']

With ``RATECARD_EVENT_BUFFER=nats`` the ingestion routes do not write to the store. Each event
is checked on its own here (`core.events.parse_event`: fields, id, meter code, timestamp,
property values), so what can never be stored is ``rejected`` at once; the rest, a repeat of
an id within the request included, are normalized (the timestamp made explicit: an
event without one occurred when the API received it, not when the worker got to it) and
published. The answer, ``queued``, is sent only after JetStream's PubAck: the events are stored
in the stream and will reach the store. Whether each one is then accepted, a duplicate (of an
event already stored, or of an earlier one of the request), held, or rejected by what only the
store knows (unknown customer or meter, the tenant's age limits, a closed period) is decided
by ``ratecard worker --consume nats``, which applies exactly the rules of direct ingestion
(`IngestionService.ingest`) and its dedup.

The ``Nats-Msg-Id`` of a request is a hash of its tenant, mode and events as sent, so a retried
request publishes the same message ids and JetStream stores it once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from ratecard.adapters.clock import Clock
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.usage_notices import UsageListener
from ratecard.core.errors import ErrorCode, Problem, ValidationFailed
from ratecard.core.events import MAX_BATCH, IncomingEvent, format_timestamp, parse_event
from ratecard.services.metering.batches import EventResult, EventStatus, IngestResult


class Publisher(Protocol):
    async def publish(
        self, scope: TenantScope, events: Sequence[Any], *, msg_id: str | None = None
    ) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class UsageNotices(Protocol):
    """A buffer that also tells of usage the worker stored (`LazyNatsBuffer`)."""

    async def on_usage_changed(self, listener: UsageListener) -> None: ...


def native(event: IncomingEvent) -> dict[str, Any]:
    """A valid event as the native JSON the worker ingests, its timestamp explicit."""
    out: dict[str, Any] = {
        "id": event.event_id,
        "type": event.meter_code,
        "timestamp": format_timestamp(event.occurred_at),
        "properties": dict(event.properties),
    }
    if event.customer_ref is not None:
        out["customer"] = event.customer_ref
    if event.subscription_ref is not None:
        out["subscription"] = event.subscription_ref
    return out


def message_id(scope: TenantScope, items: Sequence[Any]) -> str:
    """Deterministic per (tenant, mode, events as sent): a retried request gets the same id."""
    body = {"tenant_id": scope.tenant_id, "mode": str(scope.mode), "events": list(items)}
    text = json.dumps(body, default=_text, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Problem):
        return [str(value.code), value.message, value.field]
    return repr(value)


def screen(
    items: Sequence[Any], received_at: datetime
) -> tuple[list[EventResult], list[dict[str, Any]]]:
    """A result per item (queued or rejected) and the events to publish. A repeated id is
    published too: the consumer's store decides which occurrence takes it (the first it
    admits), as direct ingestion does."""
    results: list[EventResult] = []
    publish: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        if isinstance(raw, Problem):  # a format adapter could not map this item
            results.append(EventResult(index, None, EventStatus.REJECTED, (raw,)))
            continue
        try:
            event = parse_event(raw, received_at)
        except ValidationFailed as exc:
            event_id = raw.get("id") if isinstance(raw, Mapping) else None
            results.append(
                EventResult(
                    index,
                    event_id if isinstance(event_id, str) else None,
                    EventStatus.REJECTED,
                    exc.problems,
                )
            )
            continue
        results.append(EventResult(index, event.event_id, EventStatus.QUEUED))
        publish.append(native(event))
    return results, publish


class BufferedIngestion:
    def __init__(self, publisher: Publisher, clock: Clock) -> None:
        self.publisher = publisher
        self._clock = clock

    async def ingest(self, scope: TenantScope, items: Sequence[Any]) -> IngestResult:
        """Screen and publish `items`; returns after JetStream stored them (PubAck).

        Raises `adapters.event_bus.BufferUnavailable` when it did not: nothing is acknowledged.
        """
        if len(items) > MAX_BATCH:
            raise ValidationFailed(
                [Problem(ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH} events per batch")]
            )
        results, publish = screen(items, self._clock.now())
        if publish:
            await self.publisher.publish(scope, publish, msg_id=message_id(scope, items))
        return IngestResult(tuple(results))

    async def close(self) -> None:
        await self.publisher.close()
