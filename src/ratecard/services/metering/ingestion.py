"""Ingesting batches of events: a result per event, one transaction and one commit per round.

    >>> service = IngestionService(sessions, clock)                         # doctest: +SKIP
    >>> result = service.ingest(scope, parse_batch(body))                   # doctest: +SKIP
    >>> [(r.status, r.code) for r in result.results]                        # doctest: +SKIP
    [('accepted', None), ('duplicate', None), ('rejected', 'unknown_meter')]

What happens to a batch (at most 10,000 events):
1. `prepare`: each event is validated on its own (`core.events.parse_event`) and its stored
   forms are made (`event_store.encode`). Pure CPU, in the caller's thread;
2. `store`, for one batch or a round of them (`group_commit`), in one transaction, admits
   the events (`admission.admit`): the tenant's past/future limits are applied; customers (by
   external id, or through a subscription id) and meters (by code) are resolved; unknown ones
   are rejected or held per tenant policy; an event for a period already invoiced is late, and
   kept (billed as an adjustment) or rejected per policy. An id repeated in the batch or the
   round counts once: its first occurrence that is admitted. Each is judged as if sent after
   those before it (one rejected does not take the id; a repeat that passes is a duplicate);
3. the events are written with the store's dedup (`adapters.db.event_store`); the ids the store
   already held are duplicates, counted nothing;
4. the new events' hourly rollup partials are merged into the rollups in the same
   transaction, so rollups and raw events never disagree; then one commit. The results are
   returned only after it, so an accepted event is durably stored;
5. after the commit, listeners (alerts, the entitlement cache) hear which (customer, meter) pairs
   changed.

A batch's forms on the way (`Prepared`, `Columns`, `Stored`, `IngestResult`) are in `batches`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db import event_store, rollup_seal, rollup_store
from ratecard.adapters.db.models import MeterRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import GroupKey
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.events import MAX_BATCH
from ratecard.core.rollups import Partial, decomposable, hour_of, keyed_partials
from ratecard.services.metering.admission import admit
from ratecard.services.metering.batches import (
    ACCEPTED,
    DUPLICATE,
    HELD,
    NO_EVENTS,
    Columns,
    EventResult,
    EventStatus,
    IngestResult,
    Listener,
    Prepared,
    Stored,
)
from ratecard.services.metering.event_rows import Row, event_row, valid_rows
from ratecard.services.metering.meters import meter_spec
from ratecard.services.metering.policy import load_policy

_DEADLOCK_ATTEMPTS = 5
_RETRYABLE = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


class IngestionService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        *,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.listeners = list(listeners)
        self._sealed: datetime | None = None  # the seal as this service last saw it

    def seal_due(self) -> datetime:
        """Seal the days of rollups that ended `SEAL_LAG` ago or more (`rollup_seal.
        seal_rollups`), in a transaction of its own: up to the first day with rollups per call,
        so that a store with a long unsealed history catches up a day per writer round.
        Returns the seal."""
        due = rollup_store.day_of(self._clock.now() - rollup_store.SEAL_LAG)
        if self._sealed is not None and self._sealed >= due:
            return self._sealed
        with self._sessions() as session:
            self._sealed = rollup_seal.seal_rollups(session, due, one_day=True)
            session.commit()
        return self._sealed

    def prepare(self, items: Sequence[Any]) -> Prepared:
        """Validate `items` (native events) one by one, without the store: pure CPU."""
        if len(items) > MAX_BATCH:
            raise ValidationFailed(
                [Problem(ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH} events per batch")]
            )
        received_at = self._clock.now()
        results: list[EventResult | None] = [None] * len(items)
        valid: list[Row] = []
        for index, (raw, fast) in enumerate(
            zip(items, valid_rows(items, received_at), strict=True)
        ):
            row = fast
            if row is None:  # not the common case: read thoroughly
                if isinstance(raw, Problem):  # a format adapter could not map this item
                    results[index] = EventResult(index, None, EventStatus.REJECTED, (raw,))
                    continue
                try:
                    row = event_row(index, raw, received_at)
                except ValidationFailed as exc:
                    event_id = raw.get("id") if isinstance(raw, Mapping) else None
                    results[index] = EventResult(
                        index,
                        event_id if isinstance(event_id, str) else None,
                        EventStatus.REJECTED,
                        exc.problems,
                    )
                    continue
            valid.append(row)
        columns = Columns(*zip(*valid, strict=True)) if valid else NO_EVENTS
        return Prepared(received_at, results, columns)

    def ingest(
        self, scope: TenantScope, items: Sequence[Any], *, actor: str = "ingest"
    ) -> IngestResult:
        """Validate and store `items` (native events); a result per item, in order."""
        return self.store(scope, [self.prepare(items)], actor=actor)[0]

    def store(
        self, scope: TenantScope, batches: Sequence[Prepared], *, actor: str = "ingest"
    ) -> list[IngestResult]:
        """Store prepared batches of one scope in one transaction with one commit (group
        commit); a result per batch, as if they had been stored one after the other.

        An id repeated in or across the batches is stored once: its first admitted event.
        """
        outcomes = self.store_valid(scope, batches, actor=actor)
        return [batch.answered(stored) for batch, stored in zip(batches, outcomes, strict=True)]

    def store_valid(
        self, scope: TenantScope, batches: Sequence[Prepared], *, actor: str = "ingest"
    ) -> list[Stored]:
        """`store`, the outcome of each batch's valid events as plain values (what a writer
        process sends back)."""
        sizes = [batch.size for batch in batches]
        if len(batches) == 1:
            columns = batches[0].valid
        else:  # one set of columns for the round, each column joined in C
            columns = Columns(
                *(
                    list(chain.from_iterable(column))
                    for column in zip(*(b.valid for b in batches), strict=True)
                )
            )
        statuses: list[str] = [DUPLICATE] * len(columns.ids)
        positions = range(len(columns.ids))
        received_at = max((b.received_at for b in batches), default=self._clock.now())
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            problems: dict[int, tuple[Problem, ...]] = {}
            outcome = statuses.copy()  # a retry starts over
            try:
                touched = self._store(
                    scope,
                    actor=actor,
                    columns=columns,
                    positions=positions,
                    statuses=outcome,
                    problems=problems,
                    received_at=received_at,
                )
                break
            except Exception as exc:  # re-raised unless retryable
                # Two batches inserting overlapping ids in different orders can deadlock on
                # PostgreSQL; the loser rolled back whole, so running it again is exact.
                if attempt == _DEADLOCK_ATTEMPTS or not _retryable(exc):
                    raise
        for listener in self.listeners:
            listener(scope, touched)
        out: list[Stored] = []
        start = 0
        for size in sizes:
            end = start + size
            mine = {k - start: p for k, p in problems.items() if start <= k < end}
            out.append(Stored(outcome[start:end], mine, touched))
            start = end
        return out

    def _store(
        self,
        scope: TenantScope,
        *,
        actor: str,
        columns: Columns,
        positions: Sequence[int],
        statuses: list[str],
        problems: dict[int, tuple[Problem, ...]],
        received_at: datetime,
    ) -> frozenset[tuple[str, str]]:
        """One transaction: admit, insert with dedup, roll up, commit. Fills `statuses` and
        `problems` at `positions`; returns the (customer, meter) pairs it counted events of."""
        with UnitOfWork(self._sessions, scope, actor=actor, clock=self._clock) as uow:
            session = uow.session
            policy = load_policy(session, scope)
            meters = _meters(session, scope, lock=True)
            # Stamped under the meter lock, which `close_usage` takes exclusively: an event
            # received before a closing is in the usage the closed invoice read.
            received_at = max(received_at, self._clock.now())
            customer_ids: list[str | None] = [None] * len(statuses)
            admitted = admit(
                session,
                scope,
                policy=policy,
                specs={code: meter_spec(row) for code, row in meters.items()},
                columns=columns,
                positions=positions,
                statuses=statuses,
                problems=problems,
                customer_ids=customer_ids,
                received_at=received_at,
            )
            # In event id order: concurrent batches then wait on each other's ids (PostgreSQL's
            # dedup constraint) in one order and cannot deadlock; `seq` within a batch follows
            # the ids (on both engines).
            order = sorted(admitted, key=columns.ids.__getitem__)
            rows = event_store.Rows(
                _take(columns.ids, order),
                _take(columns.meters, order),
                _take(columns.refs, order),
                _take(customer_ids, order),
                _take(columns.occurred, order),
                _take(columns.hours, order),
                _take(columns.json, order),
            )
            seqs = event_store.insert_rows(session, scope, rows, received_at)
            fresh: list[tuple[int, int]] = []  # (position, seq) of the events counted
            for position, seq in zip(order, seqs, strict=True):
                if seq is None:
                    statuses[position] = DUPLICATE
                elif customer_ids[position] is None:
                    statuses[position] = HELD
                else:
                    statuses[position] = ACCEPTED
                    fresh.append((position, seq))
            partials, touched = _partials(meters, columns, customer_ids, fresh)
            rollup_store.add_rollups(session, scope, partials)
            uow.commit()
        return touched


def _take(values: Sequence[Any], positions: Sequence[int]) -> Sequence[Any]:
    """The values at `positions`, picked in C."""
    if len(positions) > 1:
        picked: Sequence[Any] = itemgetter(*positions)(values)
        return picked
    return [values[k] for k in positions]


def _retryable(exc: Exception) -> bool:
    """A deadlock or serialization failure, from SQLAlchemy or from the raw COPY cursor."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(cause, "sqlstate", None) in _RETRYABLE


def _partials(
    meters: Mapping[str, MeterRow],
    columns: Columns,
    customer_ids: Sequence[str | None],
    fresh: Sequence[tuple[int, int]],
) -> tuple[list[tuple[str, str, datetime, GroupKey, Partial]], frozenset[tuple[str, str]]]:
    """`rollup_partials` of the events at `fresh` positions (with their seq), and the
    (customer, meter) pairs they count for. Keyed by the hour, so their instants are compared
    as the stored texts and read once per key (`keyed_partials`)."""
    by_meter: dict[str, list[tuple[tuple[str, datetime], str, dict[str, str], int]]] = defaultdict(
        list
    )
    meter_of, hours, occurred, properties = (
        columns.meters,
        columns.hours,
        columns.occurred,
        columns.properties,
    )
    hour_start = event_store.hour_start
    for k, seq in fresh:
        by_meter[meter_of[k]].append(
            ((customer_ids[k], hour_start(hours[k])), occurred[k], properties[k], seq)  # type: ignore[arg-type]
        )
    out = []
    touched: set[tuple[str, str]] = set()
    for code, rows in by_meter.items():
        touched.update((customer_id, code) for (customer_id, _), _, _, _ in rows)
        spec = meter_spec(meters[code])
        if not decomposable(spec):
            continue
        keyed = keyed_partials(spec, rows, event_store.stored_instant)
        for ((customer_id, hour_at), group), partial in keyed.items():
            out.append((customer_id, code, hour_at, group, partial))
    return out, frozenset(touched)


def rollup_partials(
    meters: Mapping[str, MeterRow], events: Iterable[tuple[event_store.NewEvent, int]]
) -> list[tuple[str, str, datetime, GroupKey, Partial]]:
    """The hourly partials of stored events, per (customer, meter, hour, group).

    One pass of plain arithmetic per meter (`keyed_partials`). The order of the events does
    not matter: sums are exact, and the latest value is picked by (time, arrival).
    """
    by_meter: dict[str, list[tuple[tuple[str, datetime], datetime, dict[str, str], int]]] = (
        defaultdict(list)
    )
    for new, seq in events:
        if new.customer_id is None or new.meter_code not in meters:
            continue
        at = new.occurred_at
        hour_at = hour_of(at) if new.encoded is None else new.encoded.hour_at
        by_meter[new.meter_code].append(((new.customer_id, hour_at), at, new.properties, seq))
    out = []
    for code, rows in by_meter.items():
        spec = meter_spec(meters[code])
        if not decomposable(spec):
            continue
        for ((customer_id, hour_at), group), partial in keyed_partials(spec, rows).items():
            out.append((customer_id, code, hour_at, group, partial))
    return out


class MeterBeingRedefined(RatecardError):
    """A meter of the batch's tenant is locked (being redefined, its rollups rebuilt): the
    batch was not stored; retry it in a moment. The writer goes on with other tenants."""

    def __init__(self) -> None:
        super().__init__(
            "a meter of this tenant is being redefined: retry in a moment",
            code=ErrorCode.INGESTION_BUSY,
        )


#: How long a round waits for its tenant's meters (PostgreSQL) before it gives their batches
#: back as busy: a redefinition holds them while it rebuilds, and the writer serves every tenant.
METER_LOCK_WAIT_MS = 1000


def _meters(session: Session, scope: TenantScope, *, lock: bool = False) -> dict[str, MeterRow]:
    """The scope's meters by code; `lock` takes a share lock (PostgreSQL) so a meter cannot be
    redefined while events are rolled up under its old definition, waiting at most
    `METER_LOCK_WAIT_MS` (`MeterBeingRedefined`)."""
    statement = select(MeterRow).where(
        MeterRow.tenant_id == scope.tenant_id, MeterRow.mode == scope.mode
    )
    if not (lock and session.get_bind().dialect.name == "postgresql"):
        return {row.code: row for row in session.scalars(statement)}
    connection = session.connection()
    connection.exec_driver_sql(_WAIT_FOR_METERS)
    try:
        rows = list(session.scalars(statement.with_for_update(read=True)))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise MeterBeingRedefined() from None
        raise
    connection.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")  # the rest waits as ever
    return {row.code: row for row in rows}


_WAIT_FOR_METERS = f"SET LOCAL lock_timeout = '{METER_LOCK_WAIT_MS}ms'"


def meters_to_roll_up(session: Session, scope: TenantScope) -> dict[str, MeterRow]:
    """The scope's meters by code, for rolling up events outside a round (a release of held
    events): under a share lock on PostgreSQL, as a round takes it, but waiting for as long as
    a redefinition holds them. So no partial of the old definition lands in rollups that a
    redefinition rebuilds meanwhile. (SQLite serializes every writer already.)"""
    statement = select(MeterRow).where(
        MeterRow.tenant_id == scope.tenant_id, MeterRow.mode == scope.mode
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(read=True)
    # as stored now, not as an object the session loaded before (a meter just created)
    statement = statement.execution_options(populate_existing=True)
    return {row.code: row for row in session.scalars(statement)}
