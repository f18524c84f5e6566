"""Stored usage events, read back (``GET /v1/events/{id}``, ``GET /v1/events``).

    GET /v1/events/evt-1
    -> 200 {"id": "evt-1", "object": "event", "type": "api_calls", "customer_ref": "acme",
            "customer_id": "cus_…", "subscription_id": null,
            "timestamp": "2024-01-20T12:00:00Z", "properties": {"tokens": "1250"},
            "received_at": "2024-01-20T12:00:01Z", "status": "accepted", "livemode": true}
    GET /v1/events?status=held&type=api_calls&start_at=2024-01-01T00:00:00Z&limit=50
    -> 200 {"data": [...], "has_more": true, "next_cursor": "evt-0042"}

``status`` is ``accepted`` (counted) or ``held`` (its customer or meter is unknown yet; counted
once both exist). Rejected events are not stored: an unknown id — or another tenant's, or the
other mode's — is a 404 problem. With the JetStream buffer on, an event answered ``queued`` is
found here once ``ratecard worker`` stored it; until then (and if the worker rejected it) the
answer is 404. Lists run the latest received first; filters: ``customer_id`` (the resolved
customer), ``customer_ref`` (the customer's external id or the subscription id the event
named), ``type`` (the meter), ``status``, and ``start_at`` / ``end_at`` on the event's
timestamp (half-open). Reader role. These routes are read-only: ``POST /v1/events`` (ingestion,
`web.api.events`) is untouched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AwareDatetime, BaseModel

from ratecard.core.errors import Problem, ValidationFailed
from ratecard.services.metering.event_log import (
    EventFilter,
    StoredEvent,
    StoredStatus,
    get_event,
    list_events,
)
from ratecard.web.api.common import Limit, ListPage
from ratecard.web.deps import Reader
from ratecard.web.routing import Router

router = Router(tags=["events"])

#: Event ids are up to 255 printable characters, slashes included.
EventId = Annotated[str, Path(min_length=1, max_length=255, description="The event's id")]


class StoredEventView(BaseModel):
    id: str
    object: str = "event"
    type: str
    customer_ref: str
    customer_id: str | None
    subscription_id: str | None
    timestamp: datetime
    properties: dict[str, str]
    received_at: datetime
    status: StoredStatus
    livemode: bool

    @classmethod
    def of(cls, event: StoredEvent, livemode: bool) -> StoredEventView:
        return cls(
            id=event.event_id,
            type=event.meter_code,
            customer_ref=event.customer_ref,
            customer_id=event.customer_id,
            subscription_id=event.subscription_id,
            timestamp=event.occurred_at,
            properties=event.properties,
            received_at=event.received_at,
            status=event.status,
            livemode=livemode,
        )


@router.get("/v1/events/{event_id:path}", response_model=StoredEventView)
def get_stored_event(event_id: EventId, ctx: Reader) -> StoredEventView:
    """The stored event with this id: accepted or held (404 when not stored in this scope)."""
    with ctx.reader() as uow:
        event = get_event(uow, event_id)
    return StoredEventView.of(event, ctx.principal.scope.mode == "live")


@router.get("/v1/events", response_model=ListPage[StoredEventView])
def list_stored_events(
    ctx: Reader,
    *,
    limit: Limit = 20,
    starting_after: Annotated[
        str | None,
        Query(min_length=1, max_length=255, description="The `next_cursor` of the previous page"),
    ] = None,
    customer_id: Annotated[str | None, Query(max_length=40)] = None,
    customer_ref: Annotated[
        str | None,
        Query(max_length=255, description="The customer external id or subscription id sent"),
    ] = None,
    type: Annotated[str | None, Query(max_length=100, description="The meter's code")] = None,
    status: StoredStatus | None = None,
    start_at: Annotated[AwareDatetime | None, Query()] = None,
    end_at: Annotated[AwareDatetime | None, Query()] = None,
) -> ListPage[StoredEventView]:
    """Stored events, the latest received first, with filters."""
    try:
        where = EventFilter(
            customer_id=customer_id,
            customer_ref=customer_ref,
            meter_code=type,
            status=status,
            start_at=None if start_at is None else start_at.astimezone(UTC),
            end_at=None if end_at is None else end_at.astimezone(UTC),
        )
        with ctx.reader() as uow:
            page = list_events(uow, where, limit=limit, starting_after=starting_after)
    except ValidationFailed as failed:
        raise _in_query(failed) from None
    live = ctx.principal.scope.mode == "live"
    return ListPage[StoredEventView](
        data=[StoredEventView.of(e, live) for e in page.events],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


def _in_query(failed: ValidationFailed) -> ValidationFailed:
    """Problems of query parameters name ``query.<parameter>``."""
    return ValidationFailed(
        [
            Problem(p.code, p.message, None if p.field is None else f"query.{p.field}")
            for p in failed.problems
        ]
    )
