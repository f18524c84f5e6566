"""Reads of raw events: a customer's events of a meter in a span, a meter's history for a
rebuild, and the `seq` marks a redefinition reads between (`services.metering.rebuild`).

    >>> [event for event, seq in read_events(session, scope, "cus_1", "calls")]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.orm import Session

from ratecard.adapters.db.event_ids import LOOKUP_CHUNK, chunks
from ratecard.adapters.db.event_store import _utc, hour_number
from ratecard.adapters.db.models import (
    EventRow,
)
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.types import loads, sqlite_instant_text
from ratecard.core.aggregation import Event


def read_events(
    session: Session,
    scope: TenantScope,
    customer_id: str,
    meter_code: str,
    *,
    start_at: datetime | None,
    end_at: datetime,
    received_by: datetime | None = None,
) -> list[tuple[Event, int]]:
    """A customer's events of one meter in ``[start_at, end_at)`` in (time, arrival) order.

    ``received_by`` keeps only events counted at or before that instant (usage as of then): an
    event counts from its receipt, or from its release if it was held (``counted_at``).
    On the usage hot path (a period's edges): one range read of the hour-keyed index through
    the DBAPI cursor, properties parsed by `types.loads` (decimals, never floats).
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    mark = "%s" if postgres else "?"

    def bound(at: datetime) -> Any:
        return at if postgres else sqlite_instant_text(at)

    sql = (
        f"SELECT occurred_at, {'properties::text' if postgres else 'properties'}, seq "
        f"FROM events WHERE tenant_id = {mark} AND mode = {mark} AND customer_id = {mark} "
        f"AND meter_code = {mark} AND occurred_hour <= {mark} AND occurred_at < {mark}"
    )
    params: list[Any] = [
        scope.tenant_id,
        scope.mode.value,
        customer_id,
        meter_code,
        hour_number(end_at),  # the index's range
        bound(end_at),
    ]
    if start_at is not None:
        sql += f" AND occurred_hour >= {mark} AND occurred_at >= {mark}"
        params += [hour_number(start_at), bound(start_at)]
    if received_by is not None:
        sql += f" AND coalesce(counted_at, received_at) <= {mark}"
        params.append(bound(received_by))
    return _fetch_events(session, sql + " ORDER BY occurred_at, seq", params)


def meter_events(
    session: Session,
    scope: TenantScope,
    meter_code: str,
    *,
    since: datetime | None = None,
    up_to_seq: int | None = None,
) -> Generator[tuple[str, Event, int], None, None]:
    """Every counted event of a meter (from `since`, up to ``seq`` `up_to_seq`) as
    ``(customer_id, event, seq)``, in (customer, time, arrival) order: what a rebuild of its
    rollups reads. Streamed through the driver (a server-side cursor on PostgreSQL),
    `_REBUILD_FETCH` rows at a time."""
    postgres = session.get_bind().dialect.name == "postgresql"
    sql, mark = _counted_of_meter(postgres)
    params: list[Any] = [scope.tenant_id, scope.mode.value, meter_code]
    if since is not None:
        sql += f" AND occurred_at >= {mark}"
        params.append(since if postgres else sqlite_instant_text(since))
    if up_to_seq is not None:
        sql += f" AND seq <= {mark}"
        params.append(up_to_seq)
    dbapi: Any = session.connection().connection.dbapi_connection
    cursor = dbapi.cursor(name="ratecard_meter_events") if postgres else dbapi.cursor()
    try:
        if postgres:
            cursor.itersize = _REBUILD_FETCH
        cursor.execute(sql + " ORDER BY customer_id, occurred_at, seq", params)
        while rows := cursor.fetchmany(_REBUILD_FETCH):
            for customer_id, at, properties, seq in rows:
                event, number = _stored_event(postgres, at, properties, seq)
                yield str(customer_id), event, number
    finally:
        cursor.close()


_REBUILD_FETCH = 5_000


def _counted_of_meter(postgres: bool) -> tuple[str, str]:
    """A query of one meter's counted events, ``(customer_id, occurred_at, properties text,
    seq)``, the scope and the meter bound in that order; and the engine's bind mark."""
    mark = "%s" if postgres else "?"
    sql = (
        f"SELECT customer_id, occurred_at, {'properties::text' if postgres else 'properties'}, "
        f"seq FROM events WHERE tenant_id = {mark} AND mode = {mark} AND meter_code = {mark} "
        "AND customer_id IS NOT NULL"
    )
    return sql, mark


def last_seq(session: Session, scope: TenantScope) -> int:
    """The highest ``seq`` of the scope's events (0: none), through its ``(tenant_id, mode,
    seq)`` index."""
    found = session.scalar(
        select(func.max(EventRow.seq)).where(
            EventRow.tenant_id == scope.tenant_id, EventRow.mode == scope.mode
        )
    )
    return int(found or 0)


def held_seqs(session: Session, scope: TenantScope, meter_code: str, up_to_seq: int) -> list[int]:
    """The ``seq`` of the meter's events held (no customer yet) up to `up_to_seq`."""
    return [
        int(seq)
        for seq in session.scalars(
            select(EventRow.seq).where(
                EventRow.tenant_id == scope.tenant_id,
                EventRow.mode == scope.mode,
                EventRow.customer_id.is_(None),
                EventRow.meter_code == meter_code,
                EventRow.seq <= up_to_seq,
            )
        )
    ]


def counted_since(
    session: Session, scope: TenantScope, meter_code: str, after_seq: int, released: Sequence[int]
) -> list[tuple[str, Event, int]]:
    """The meter's counted events stored after `after_seq`, and those of `released` (``seq``
    of events that were held) counted now, in (customer, time, arrival) order: what arrived
    while a rebuild read the rest (`services.metering.rebuild`)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    select_, mark = _counted_of_meter(postgres)
    scoped = [scope.tenant_id, scope.mode.value, meter_code]
    rows = _fetch_all(session, f"{select_} AND seq > {mark}", [*scoped, after_seq])
    for chunk in chunks([str(seq) for seq in released], LOOKUP_CHUNK):
        marks = ", ".join([mark] * len(chunk))
        rows += _fetch_all(session, f"{select_} AND seq IN ({marks})", [*scoped, *map(int, chunk)])
    events = [
        (str(c), *_stored_event(postgres, at, properties, seq)) for c, at, properties, seq in rows
    ]
    return sorted(events, key=lambda e: (e[0], e[1].timestamp, e[2]))


def _fetch_all(session: Session, sql: str, params: Any) -> list[Any]:
    """The rows of `sql` run on the session's driver connection (no ORM on the read path)."""
    dbapi: Any = session.connection().connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _stored_event(postgres: bool, at: Any, properties: str, seq: Any) -> tuple[Event, int]:
    """A stored event's instant (as the driver gives it), properties text and ``seq``, as a
    core event and its arrival number."""
    return Event(_utc(at) if postgres else datetime.fromisoformat(at), loads(properties)), int(seq)


def _fetch_events(session: Session, sql: str, params: Sequence[Any]) -> list[tuple[Event, int]]:
    """Rows ``(occurred_at, properties text, seq)`` of a raw events query, as core events."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return [_stored_event(postgres, *row) for row in _fetch_all(session, sql, params)]
