"""Reading stored events back: one by its id, or a page of them, the latest received first.

    >>> event = get_event(uow, "evt_01")                                    # doctest: +SKIP
    >>> event.status, event.customer_id, event.properties
    ('accepted', 'cus_3f9a...', {'tokens': '1250'})
    >>> page = list_events(uow, EventFilter(status=StoredStatus.HELD), limit=20)  # doctest: +SKIP
    >>> page.has_more, page.next_cursor
    (True, 'evt_0042')

What the store keeps is what was accepted or held: an event is ``accepted`` once it has a
customer (it is counted), ``held`` while its customer or meter is unknown (kept and deduplicated,
counted once both exist — whatever the tenant's policy says by then). Rejected events are not
stored, so they are not found here.

The store keeps the reference the event named — a customer's external id, or a subscription id —
in one column. `customer_ref` is that reference as sent; `subscription_id` is set when an
accepted event was attributed through a subscription (its reference is not its customer's
external id but one of that customer's subscriptions).

Pages are in arrival order, the latest first (``seq`` descending: ties of timestamps never
reorder, and an event that arrives late for an old timestamp is still on the first page); the
cursor is the last event's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from ratecard.adapters.db import event_ids
from ratecard.adapters.db.models import CustomerRow, EventRow, SubscriptionRow
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.errors import NotFound, invalid
from ratecard.services.common import MAX_LIMIT

_CHUNK = 500


class StoredStatus(StrEnum):
    ACCEPTED = "accepted"  # attributed to a customer and counted
    HELD = "held"  # waiting for its customer or meter


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    meter_code: str
    customer_ref: str
    customer_id: str | None
    subscription_id: str | None
    occurred_at: datetime
    received_at: datetime
    properties: dict[str, str]

    @property
    def status(self) -> StoredStatus:
        return StoredStatus.HELD if self.customer_id is None else StoredStatus.ACCEPTED


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list; every filter given must match. Times are half-open on the event's
    timestamp: ``start_at <= timestamp < end_at``."""

    customer_id: str | None = None
    customer_ref: str | None = None
    meter_code: str | None = None
    status: StoredStatus | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.start_at is not None and self.end_at is not None and self.start_at >= self.end_at:
            raise invalid("end_at must be after start_at", "end_at")


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[StoredEvent]
    has_more: bool

    @property
    def next_cursor(self) -> str | None:
        return self.events[-1].event_id if self.has_more and self.events else None


def _scoped(uow: UnitOfWork) -> Any:
    return select(
        EventRow.seq,
        EventRow.event_id,
        EventRow.meter_code,
        EventRow.customer_ref,
        EventRow.customer_id,
        EventRow.occurred_at,
        EventRow.received_at,
        EventRow.properties,
    ).where(EventRow.tenant_id == uow.scope.tenant_id, EventRow.mode == uow.scope.mode)


def get_event(uow: UnitOfWork, event_id: str) -> StoredEvent:
    """The stored event with this id in the scope; `NotFound` otherwise (also for another
    tenant's or mode's id: nothing tells them apart)."""
    matches = event_ids.id_matches(uow.session, uow.scope, event_id)
    row = uow.session.execute(_scoped(uow).where(matches)).one_or_none()
    if row is None:
        raise NotFound(f"event {event_id} not found")
    (event,) = _events(uow, [row])
    return event


def list_events(
    uow: UnitOfWork, where: EventFilter, *, limit: int, starting_after: str | None = None
) -> EventPage:
    """One page of the scope's stored events, the latest received first."""
    assert 0 < limit <= MAX_LIMIT
    statement = _scoped(uow)
    if starting_after is not None:
        cursor = uow.session.scalar(
            select(EventRow.seq).where(event_ids.id_matches(uow.session, uow.scope, starting_after))
        )
        if cursor is None:
            raise invalid("no such event: pass the next_cursor of a page", "starting_after")
        statement = statement.where(EventRow.seq < cursor)
    if where.customer_id is not None:
        statement = statement.where(EventRow.customer_id == where.customer_id)
    if where.customer_ref is not None:
        statement = statement.where(EventRow.customer_ref == where.customer_ref)
    if where.meter_code is not None:
        statement = statement.where(EventRow.meter_code == where.meter_code)
    if where.status is StoredStatus.HELD:
        statement = statement.where(EventRow.customer_id.is_(None))
    elif where.status is StoredStatus.ACCEPTED:
        statement = statement.where(EventRow.customer_id.is_not(None))
    if where.start_at is not None:
        statement = statement.where(EventRow.occurred_at >= where.start_at)
    if where.end_at is not None:
        statement = statement.where(EventRow.occurred_at < where.end_at)
    rows = list(uow.session.execute(statement.order_by(EventRow.seq.desc()).limit(limit + 1)))
    return EventPage(_events(uow, rows[:limit]), len(rows) > limit)


def _events(uow: UnitOfWork, rows: Sequence[Any]) -> list[StoredEvent]:
    """Stored events of raw rows, each accepted one's subscription resolved."""
    scope, session = uow.scope, uow.session
    customer_ids = sorted({str(r.customer_id) for r in rows if r.customer_id is not None})
    external: dict[str, str] = {}
    subscriptions: dict[str, str] = {}  # subscription id -> its customer
    for start in range(0, len(customer_ids), _CHUNK):
        chunk = customer_ids[start : start + _CHUNK]
        external.update(
            (str(cid), str(ext))
            for cid, ext in session.execute(
                select(CustomerRow.id, CustomerRow.external_id).where(
                    CustomerRow.tenant_id == scope.tenant_id,
                    CustomerRow.mode == scope.mode,
                    CustomerRow.id.in_(chunk),
                )
            )
        )
    refs = sorted(
        {
            str(r.customer_ref)
            for r in rows
            if r.customer_id is not None and external.get(str(r.customer_id)) != r.customer_ref
        }
    )
    for start in range(0, len(refs), _CHUNK):
        subscriptions.update(
            (str(sid), str(cid))
            for sid, cid in session.execute(
                select(SubscriptionRow.id, SubscriptionRow.customer_id).where(
                    SubscriptionRow.tenant_id == scope.tenant_id,
                    SubscriptionRow.mode == scope.mode,
                    SubscriptionRow.id.in_(refs[start : start + _CHUNK]),
                )
            )
        )
    out = []
    for r in rows:
        customer_id = None if r.customer_id is None else str(r.customer_id)
        ref = str(r.customer_ref)
        through = customer_id is not None and subscriptions.get(ref) == customer_id
        out.append(
            StoredEvent(
                seq=int(r.seq),
                event_id=str(r.event_id),
                meter_code=str(r.meter_code),
                customer_ref=ref,
                customer_id=customer_id,
                subscription_id=ref if through else None,
                occurred_at=r.occurred_at,
                received_at=r.received_at,
                properties={str(k): str(v) for k, v in (r.properties or {}).items()},
            )
        )
    return out
