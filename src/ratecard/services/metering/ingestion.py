"""Ingesting batches of events: a result per event, one transaction and one commit per round.

    >>> service = IngestionService(sessions, clock)                         # doctest: +SKIP
    >>> result = service.ingest(scope, parse_batch(body))                   # doctest: +SKIP
    >>> [(r.status, r.code) for r in result.results]                        # doctest: +SKIP
    [('accepted', None), ('duplicate', None), ('rejected', 'unknown_meter')]

What happens to a batch (at most 10,000 events):
1. `prepare`: each event is validated on its own (`core.events.parse_event`) and its stored
   forms are made (`event_store.encode`); a repeat of an id within the batch is a duplicate.
   Pure CPU, in the caller's thread;
2. `store`, for one batch or a round of them (`group_commit`; an id repeated across the round
   counts once, for the first batch), in one transaction: the tenant's past/future limits are
   applied; customers (by external id, or through a subscription id) and meters (by code) are
   resolved; unknown ones are rejected or held per tenant policy; an event for a period
   already invoiced is late, and kept (billed as an adjustment) or rejected per policy;
3. the events are written with the store's dedup (`adapters.db.event_store`); the ids the store
   already held are duplicates, counted nothing;
4. the new events' hourly rollup partials are merged into the rollups in the same
   transaction, so rollups and raw events never disagree; then one commit. The results are
   returned only after it, so an accepted event is durably stored;
5. after the commit, listeners (alerts, the entitlement cache) hear which (customer, meter) pairs
   changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db import event_store
from ratecard.adapters.db.models import CustomerRow, MeterRow, SubscriptionRow, UsageClosureRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import Aggregation, GroupKey, MeterSpec
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.events import MAX_BATCH, IncomingEvent, parse_event
from ratecard.core.money import D
from ratecard.core.rollups import Partial, decomposable, hour_of, keyed_partials
from ratecard.services.metering.meters import meter_spec
from ratecard.services.metering.policy import LateEvents, MeteringPolicy, Unknown, load_policy

_CHUNK = 500
_DEADLOCK_ATTEMPTS = 5
_RETRYABLE = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


class EventStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    HELD = "held"  # stored and deduplicated; counted once its customer and meter exist
    QUEUED = "queued"  # in the JetStream buffer; the worker decides (services.metering.buffered)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 4x to make, once per event
class EventResult:
    index: int
    event_id: str | None
    status: EventStatus
    problems: tuple[Problem, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "id": self.event_id, "status": self.status}
        if self.problems:
            first = self.problems[0]
            out.update(code=str(first.code), reason=first.message, field=first.field)
            if len(self.problems) > 1:
                out["problems"] = [
                    {"code": str(p.code), "reason": p.message, "field": p.field}
                    for p in self.problems
                ]
        return out


@dataclass(frozen=True, slots=True)
class IngestResult:
    results: tuple[EventResult, ...]
    touched: frozenset[tuple[str, str]] = field(default=frozenset())  # (customer_id, meter)

    def count(self, status: EventStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.count(EventStatus.ACCEPTED),
            "duplicates": self.count(EventStatus.DUPLICATE),
            "rejected": self.count(EventStatus.REJECTED),
            "held": self.count(EventStatus.HELD),
            "results": [r.as_dict() for r in self.results],
        }


Listener = Callable[[TenantScope, frozenset[tuple[str, str]]], None]
#: Where an event's result goes: its batch's results and its index there.
Slot = tuple[list[EventResult | None], int]
#: A valid event, where its result goes, and its values as the store writes them.
Valid = tuple[Slot, IncomingEvent, event_store.Encoded]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch validated on its own (`IngestionService.prepare`), waiting for the store."""

    received_at: datetime
    results: list[EventResult | None]  # filled: rejected and in-batch repeats; None: to store
    valid: list[Valid]

    def filled(self) -> tuple[EventResult, ...]:
        """The results, once every event has one."""
        filled = tuple(filter(None, self.results))  # a result is truthy: no per-item Python
        assert len(filled) == len(self.results), "every event has a result"
        return filled


def _reject(
    index: int, event_id: str | None, code: ErrorCode, message: str, at: str
) -> EventResult:
    return EventResult(index, event_id, EventStatus.REJECTED, (Problem(code, message, at),))


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

    def prepare(self, items: Sequence[Any]) -> Prepared:
        """Validate `items` (native events) one by one, without the store: pure CPU."""
        if len(items) > MAX_BATCH:
            raise ValidationFailed(
                [Problem(ErrorCode.BATCH_TOO_LARGE, f"at most {MAX_BATCH} events per batch")]
            )
        received_at = self._clock.now()
        results: list[EventResult | None] = [None] * len(items)
        valid: list[Valid] = []
        seen: set[str] = set()
        for index, raw in enumerate(items):
            if isinstance(raw, Problem):  # a format adapter could not map this item
                results[index] = EventResult(index, None, EventStatus.REJECTED, (raw,))
                continue
            try:
                event = parse_event(raw, received_at)
            except ValidationFailed as exc:
                event_id = raw.get("id") if isinstance(raw, Mapping) else None
                results[index] = EventResult(
                    index,
                    event_id if isinstance(event_id, str) else None,
                    EventStatus.REJECTED,
                    exc.problems,
                )
                continue
            if event.event_id in seen:
                results[index] = EventResult(index, event.event_id, EventStatus.DUPLICATE)
                continue
            seen.add(event.event_id)
            stamp = raw.get("timestamp") if type(raw) is dict else None
            encoded = event_store.encode(event.occurred_at, event.properties, stamp)
            valid.append(((results, index), event, encoded))
        return Prepared(received_at, results, valid)

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

        An id repeated across the batches is stored once: the first batch's event.
        """
        valid: list[Valid] = []
        seen: set[str] = set()
        for batch in batches:
            for item in batch.valid:
                slot, event, _ = item
                if event.event_id in seen:
                    results, index = slot
                    results[index] = EventResult(index, event.event_id, EventStatus.DUPLICATE)
                    continue
                seen.add(event.event_id)
                valid.append(item)
        received_at = max((b.received_at for b in batches), default=self._clock.now())
        for attempt in range(1, _DEADLOCK_ATTEMPTS + 1):
            try:
                fresh = self._store(scope, actor, valid, received_at)
                break
            except Exception as exc:  # re-raised unless retryable
                # Two batches inserting overlapping ids in different orders can deadlock on
                # PostgreSQL; the loser rolled back whole, so running it again is exact.
                if attempt == _DEADLOCK_ATTEMPTS or not _retryable(exc):
                    raise
        done = frozenset((new.customer_id, new.meter_code) for new, _ in fresh if new.customer_id)
        for listener in self.listeners:
            listener(scope, done)
        out = []
        for batch in batches:
            out.append(IngestResult(batch.filled(), done))
        return out

    def _store(
        self,
        scope: TenantScope,
        actor: str,
        valid: Sequence[Valid],
        received_at: datetime,
    ) -> list[tuple[event_store.NewEvent, int]]:
        """One transaction: admit, insert with dedup, roll up, commit; the events stored."""
        with UnitOfWork(self._sessions, scope, actor=actor, clock=self._clock) as uow:
            session = uow.session
            policy = load_policy(session, scope)
            meters = _meters(session, scope, lock=True)
            # Stamped under the meter lock, which `close_usage` takes exclusively: an event
            # received before a closing is in the usage the closed invoice read.
            received_at = max(received_at, self._clock.now())
            stored = self._admit(
                session,
                scope,
                policy=policy,
                specs={code: meter_spec(row) for code, row in meters.items()},
                valid=valid,
                received_at=received_at,
            )
            # In event id order: concurrent batches then wait on each other's ids (PostgreSQL's
            # dedup constraint) in one order and cannot deadlock; `seq` within a batch follows
            # the ids (on both engines).
            ordered = sorted((new for _, new in stored), key=attrgetter("event_id"))
            inserted = event_store.insert_events(session, scope, ordered, received_at)
            fresh: list[tuple[event_store.NewEvent, int]] = []
            for (results, index), new in stored:
                seq = inserted.get(new.event_id)
                if seq is None:
                    results[index] = EventResult(index, new.event_id, EventStatus.DUPLICATE)
                    continue
                held = new.customer_id is None
                status = EventStatus.HELD if held else EventStatus.ACCEPTED
                results[index] = EventResult(index, new.event_id, status)
                if not held:
                    fresh.append((new, seq))
            event_store.add_rollups(session, scope, rollup_partials(meters, fresh))
            uow.commit()
        return fresh

    def _admit(
        self,
        session: Session,
        scope: TenantScope,
        *,
        policy: MeteringPolicy,
        specs: Mapping[str, MeterSpec],
        valid: Sequence[Valid],
        received_at: datetime,
    ) -> list[tuple[Slot, event_store.NewEvent]]:
        """Resolve customers and meters and apply the policy; the events to store."""
        customers = _customers(
            session, scope, {e.customer_ref for _, e, _ in valid if e.customer_ref}
        )
        by_subscription = _subscriptions(
            session, scope, {e.subscription_ref for _, e, _ in valid if e.subscription_ref}
        )
        closed = _closed_until(
            session, scope, set(customers.values()) | set(by_subscription.values())
        )
        oldest, newest = received_at - policy.max_past, received_at + policy.max_future
        numbers = {code: _number_property(spec) for code, spec in specs.items()}
        new_event = event_store.NewEvent._make  # from a tuple: 0.11 µs, NewEvent(...) 0.18
        admitted: list[tuple[Slot, event_store.NewEvent]] = []
        for slot, e, encoded in valid:
            results, index = slot
            eid = e.event_id
            if e.occurred_at < oldest:
                results[index] = _reject(
                    index, eid, ErrorCode.EVENT_TOO_OLD, "older than the tenant allows", "timestamp"
                )
                continue
            if e.occurred_at > newest:
                results[index] = _reject(
                    index, eid, ErrorCode.EVENT_IN_FUTURE, "too far in the future", "timestamp"
                )
                continue
            if e.customer_ref is not None:
                customer_id = customers.get(e.customer_ref)
                where = "customer"
            else:
                assert e.subscription_ref is not None
                customer_id = by_subscription.get(e.subscription_ref)
                where = "subscription"
            if customer_id is None and policy.unknown_customer is Unknown.REJECT:
                results[index] = _reject(
                    index, eid, ErrorCode.UNKNOWN_CUSTOMER, f"no such {where}", where
                )
                continue
            spec = specs.get(e.meter_code)
            known_meter = spec is not None
            if not known_meter and policy.unknown_meter is Unknown.REJECT:
                results[index] = _reject(
                    index, eid, ErrorCode.UNKNOWN_METER, "no such meter", "type"
                )
                continue
            if customer_id is not None and not known_meter:
                customer_id = None  # held until the meter exists
            name = numbers.get(e.meter_code)
            if name is not None and (problem := _value_problem(name, e)) is not None:
                results[index] = EventResult(index, eid, EventStatus.REJECTED, (problem,))
                continue
            closed_end = closed.get(customer_id) if customer_id else None
            late = closed_end is not None and e.occurred_at < closed_end
            if late and policy.late_events is LateEvents.REJECT:
                results[index] = _reject(
                    index, eid, ErrorCode.LATE_EVENT, "its period is already invoiced", "timestamp"
                )
                continue
            admitted.append(
                (
                    slot,
                    new_event(
                        (
                            eid,
                            e.meter_code,
                            e.customer_ref or e.subscription_ref or "",
                            customer_id,
                            e.occurred_at,
                            e.properties,
                            encoded,
                        )
                    ),
                )
            )
        return admitted


def _retryable(exc: Exception) -> bool:
    """A deadlock or serialization failure, from SQLAlchemy or from the raw COPY cursor."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(cause, "sqlstate", None) in _RETRYABLE


def _number_property(spec: MeterSpec) -> str | None:
    """The property that must hold a number (or nothing): that of a meter that adds, compares
    or weighs values."""
    if spec.aggregation in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT):
        return None
    return spec.value_property


def _value_problem(name: str, event: IncomingEvent) -> Problem | None:
    """The problem with `event` if its property `name` holds something else than a number."""
    raw = event.properties.get(name)
    if raw is None or (type(raw) is str and raw.isdigit() and raw.isascii()):  # a whole number
        return None
    try:
        D(raw)
    except RatecardError:
        return Problem(ErrorCode.INVALID_VALUE, "must be a number", f"properties.{name}")
    return None


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


def _customers(session: Session, scope: TenantScope, refs: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    ordered = sorted(refs)
    for start in range(0, len(ordered), _CHUNK):
        statement = select(CustomerRow.external_id, CustomerRow.id).where(
            CustomerRow.tenant_id == scope.tenant_id,
            CustomerRow.mode == scope.mode,
            CustomerRow.external_id.in_(ordered[start : start + _CHUNK]),
        )
        found.update({str(ext): str(cid) for ext, cid in session.execute(statement)})
    return found


def _subscriptions(session: Session, scope: TenantScope, refs: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    ordered = sorted(refs)
    for start in range(0, len(ordered), _CHUNK):
        statement = select(SubscriptionRow.id, SubscriptionRow.customer_id).where(
            SubscriptionRow.tenant_id == scope.tenant_id,
            SubscriptionRow.mode == scope.mode,
            SubscriptionRow.id.in_(ordered[start : start + _CHUNK]),
        )
        found.update({str(sid): str(cid) for sid, cid in session.execute(statement)})
    return found


def _meters(session: Session, scope: TenantScope, *, lock: bool = False) -> dict[str, MeterRow]:
    """The scope's meters by code; `lock` takes a share lock (PostgreSQL) so a meter cannot be
    redefined while events are rolled up under its old definition."""
    statement = select(MeterRow).where(
        MeterRow.tenant_id == scope.tenant_id, MeterRow.mode == scope.mode
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(read=True)
    return {row.code: row for row in session.scalars(statement)}


def _closed_until(
    session: Session, scope: TenantScope, customer_ids: set[str]
) -> dict[str, datetime]:
    """The end of each customer's last invoiced usage period."""
    if not customer_ids:
        return {}
    found: dict[str, datetime] = {}
    ordered = sorted(customer_ids)
    for start in range(0, len(ordered), _CHUNK):
        statement = (
            select(UsageClosureRow.customer_id, func.max(UsageClosureRow.period_end_at))
            .where(
                UsageClosureRow.tenant_id == scope.tenant_id,
                UsageClosureRow.mode == scope.mode,
                UsageClosureRow.customer_id.in_(ordered[start : start + _CHUNK]),
            )
            .group_by(UsageClosureRow.customer_id)
        )
        for customer_id, end_at in session.execute(statement):
            found[str(customer_id)] = _instant(end_at)
    return found


def _instant(value: Any) -> datetime:
    """`max()` over a UtcDateTime loses the column type on SQLite: read it back here."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value
