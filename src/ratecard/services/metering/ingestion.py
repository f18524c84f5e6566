"""Ingesting batches of events: a result per event, one transaction and one commit per round.

    >>> service = IngestionService(sessions, clock)                         # doctest: +SKIP
    >>> result = service.ingest(scope, parse_batch(body))                   # doctest: +SKIP
    >>> [(r.status, r.code) for r in result.results]                        # doctest: +SKIP
    [('accepted', None), ('duplicate', None), ('rejected', 'unknown_meter')]

What happens to a batch (at most 10,000 events):
1. `prepare`: each event is validated on its own (`core.events.parse_event`) and its stored
   forms are made (`event_store.encode`). Pure CPU, in the caller's thread;
2. `store`, for one batch or a round of them (`group_commit`), in one transaction: the
   tenant's past/future limits are applied; customers (by external id, or through a
   subscription id) and meters (by code) are resolved; unknown ones are rejected or held per
   tenant policy; an event for a period already invoiced is late, and kept (billed as an
   adjustment) or rejected per policy. An id repeated in the batch or the round counts once:
   its first occurrence that is admitted. Each is judged as if sent after those before it (one
   rejected does not take the id; a repeat that passes is a duplicate);
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
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ratecard.adapters.clock import Clock
from ratecard.adapters.db import event_store, rollup_seal, rollup_store
from ratecard.adapters.db.models import CustomerRow, MeterRow, SubscriptionRow, UsageClosureRow
from ratecard.adapters.db.scope import TenantScope
from ratecard.adapters.db.uow import UnitOfWork
from ratecard.core.aggregation import Aggregation, GroupKey, MeterSpec
from ratecard.core.errors import ErrorCode, Problem, RatecardError, ValidationFailed
from ratecard.core.events import MAX_BATCH
from ratecard.core.money import D
from ratecard.core.rollups import Partial, decomposable, hour_of, keyed_partials
from ratecard.services.metering.event_rows import Row, event_row, valid_rows
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


class Columns(NamedTuple):
    """A batch's valid events as columns, in batch order (`IngestionService.prepare`): plain
    values, each made once, that cross to a writer process as they are. The writer works on
    positions in these columns; no object is made per event on its path."""

    at: Sequence[int]  # where each event is in its batch
    ids: Sequence[str]
    meters: Sequence[str]
    refs: Sequence[str]  # the customer's external id, or else the subscription's id
    by_subscription: Sequence[bool]  # True: `refs` holds a subscription id
    occurred: Sequence[str]  # `event_store.stored_instant_text`: fixed width, UTC
    hours: Sequence[int]  # `event_store.hour_number`
    properties: Sequence[dict[str, str]]
    json: Sequence[str]  # the properties as stored (`types.dumps_text_map`)


NO_EVENTS = Columns((), (), (), (), (), (), (), (), ())


class Stored(NamedTuple):
    """What the store made of a batch's valid events: a status per event, in `Columns` order
    (`EventStatus` values); the problems of those it rejected, by position; and the (customer,
    meter) pairs whose usage the round changed."""

    statuses: list[str]
    problems: dict[int, tuple[Problem, ...]]
    touched: frozenset[tuple[str, str]]


_STATUS = {status.value: status for status in EventStatus}
_ACCEPTED, _DUPLICATE, _HELD, _REJECTED = "accepted", "duplicate", "held", "rejected"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch validated on its own (`IngestionService.prepare`), waiting for the store."""

    received_at: datetime
    results: list[EventResult | None]  # filled: refused in validation; None: to store
    valid: Columns

    @property
    def size(self) -> int:
        """How many of its events go to the store."""
        return len(self.valid.ids)

    def filled(self) -> tuple[EventResult, ...]:
        """The results, once every event has one."""
        filled = tuple(filter(None, self.results))  # a result is truthy: no per-item Python
        assert len(filled) == len(self.results), "every event has a result"
        return filled

    def answered(self, stored: Stored) -> IngestResult:
        """The batch's result, with the store's outcome for its valid events."""
        results = self.results.copy()
        valid, problems, status = self.valid, stored.problems, _STATUS
        if problems:
            for k, (index, event_id, outcome) in enumerate(
                zip(valid.at, valid.ids, stored.statuses, strict=True)
            ):
                results[index] = EventResult(index, event_id, status[outcome], problems.get(k, ()))
        else:
            for index, event_id, outcome in zip(valid.at, valid.ids, stored.statuses, strict=True):
                results[index] = EventResult(index, event_id, status[outcome])
        filled = tuple(filter(None, results))
        assert len(filled) == len(results), "every event has a result"
        return IngestResult(filled, stored.touched)


def _rejected(code: ErrorCode, message: str, at: str) -> tuple[Problem, ...]:
    return (Problem(code, message, at),)


# The reasons admission gives, made once: problems are immutable, so events share them.
_TOO_OLD = _rejected(ErrorCode.EVENT_TOO_OLD, "older than the tenant allows", "timestamp")
_IN_FUTURE = _rejected(ErrorCode.EVENT_IN_FUTURE, "too far in the future", "timestamp")
_NO_CUSTOMER = _rejected(ErrorCode.UNKNOWN_CUSTOMER, "no such customer", "customer")
_NO_SUBSCRIPTION = _rejected(ErrorCode.UNKNOWN_CUSTOMER, "no such subscription", "subscription")
_NO_METER = _rejected(ErrorCode.UNKNOWN_METER, "no such meter", "type")
_LATE = _rejected(ErrorCode.LATE_EVENT, "its period is already invoiced", "timestamp")


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
        statuses: list[str] = [_DUPLICATE] * len(columns.ids)
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
            admitted = self._admit(
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
                    statuses[position] = _DUPLICATE
                elif customer_ids[position] is None:
                    statuses[position] = _HELD
                else:
                    statuses[position] = _ACCEPTED
                    fresh.append((position, seq))
            partials, touched = _partials(meters, columns, customer_ids, fresh)
            rollup_store.add_rollups(session, scope, partials)
            uow.commit()
        return touched

    def _admit(
        self,
        session: Session,
        scope: TenantScope,
        *,
        policy: MeteringPolicy,
        specs: Mapping[str, MeterSpec],
        columns: Columns,
        positions: Sequence[int],
        statuses: list[str],
        problems: dict[int, tuple[Problem, ...]],
        customer_ids: list[str | None],
        received_at: datetime,
    ) -> list[int]:
        """Resolve customers and meters and apply the policy: the positions to store, their
        customers in `customer_ids` (None: held); the others rejected in `statuses`.

        Instants are compared by their hour numbers, and read only in the hour of a bound. An
        event that passes and whose id was admitted at an earlier position is a duplicate."""
        refs, via_subscription = columns.refs, columns.by_subscription
        if any(via_subscription):
            wanted = {r for r, s in zip(refs, via_subscription, strict=True) if not s}
            subscribed = {r for r, s in zip(refs, via_subscription, strict=True) if s}
        else:
            wanted, subscribed = set(refs), set()
        closed: dict[str, tuple[int, datetime]] = {}  # each customer's last invoiced period end
        customers = _resolve(session, scope, _BY_EXTERNAL_ID, wanted, closed)
        by_subscription = _resolve(session, scope, _BY_SUBSCRIPTION, subscribed, closed)
        oldest, newest = received_at - policy.max_past, received_at + policy.max_future
        oldest_hour, newest_hour = event_store.hour_number(oldest), event_store.hour_number(newest)
        needed = {code: needed_property(spec) for code, spec in specs.items()}
        reject_customer = policy.unknown_customer is Unknown.REJECT
        reject_meter = policy.unknown_meter is Unknown.REJECT
        reject_late = policy.late_events is LateEvents.REJECT
        instant = event_store.stored_instant
        meters, hours, occurred = columns.meters, columns.hours, columns.occurred
        properties = columns.properties
        admitted: list[int] = []
        ids = columns.ids
        taken: set[str] = set()  # the ids admitted so far
        for k in positions:
            hour = hours[k]
            if hour <= oldest_hour and (hour < oldest_hour or instant(occurred[k]) < oldest):
                statuses[k] = _REJECTED
                problems[k] = _TOO_OLD
                continue
            if hour >= newest_hour and (hour > newest_hour or instant(occurred[k]) > newest):
                statuses[k] = _REJECTED
                problems[k] = _IN_FUTURE
                continue
            by_sub = via_subscription[k]
            customer_id = (by_subscription if by_sub else customers).get(refs[k])
            if customer_id is None and reject_customer:
                statuses[k] = _REJECTED
                problems[k] = _NO_SUBSCRIPTION if by_sub else _NO_CUSTOMER
                continue
            meter = meters[k]
            if meter not in specs:
                if reject_meter:
                    statuses[k] = _REJECTED
                    problems[k] = _NO_METER
                    continue
                customer_id = None  # held until the meter exists
            need = needed.get(meter)
            if need is not None and (problem := value_problem(need, properties[k])) is not None:
                statuses[k] = _REJECTED
                problems[k] = (problem,)
                continue
            if customer_id is not None:
                end = closed.get(customer_id)
                if (
                    end is not None
                    and reject_late
                    and hour <= end[0]
                    and (hour < end[0] or instant(occurred[k]) < end[1])
                ):
                    statuses[k] = _REJECTED
                    problems[k] = _LATE
                    continue
            # Judged on its own first, as if stored after the events before it: a repeat that
            # would be rejected alone is rejected, one that would be stored is a duplicate.
            if ids[k] in taken:
                statuses[k] = _DUPLICATE
                continue
            customer_ids[k] = customer_id
            admitted.append(k)
            taken.add(ids[k])
        return admitted


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


def needed_property(spec: MeterSpec) -> tuple[str, bool] | None:
    """The property an event of the meter must carry, and whether it must be a number (a
    meter that adds, compares or weighs values; a unique count takes any text). An event
    without it would count for nothing, unnoticed: it is refused."""
    if spec.aggregation is Aggregation.COUNT or spec.value_property is None:
        return None
    return spec.value_property, spec.aggregation is not Aggregation.UNIQUE_COUNT


def value_problem(need: tuple[str, bool], properties: Mapping[str, str]) -> Problem | None:
    """The problem if the property `need` names is missing, or not a number where it must be."""
    name, number = need
    raw = properties.get(name)
    if raw is None:
        return Problem(
            ErrorCode.MISSING_FIELD, f"the meter counts property {name!r}", f"properties.{name}"
        )
    if not number or (type(raw) is str and raw.isdigit() and raw.isascii()):  # a whole number
        return None
    try:
        D(raw)
    except RatecardError:
        return Problem(ErrorCode.INVALID_VALUE, "must be a number", f"properties.{name}")
    return None


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


# Who a batch's events are for, one statement a chunk of references: the customer by external id
# (`_BY_EXTERNAL_ID`) or by subscription id (`_BY_SUBSCRIPTION`), with the end of its last
# invoiced usage period (NULL: none), found through the closures' unique index.
_CU, _SU, _UC = CustomerRow.__table__.c, SubscriptionRow.__table__.c, UsageClosureRow.__table__.c


def _closed_until_of(customer_id: Any) -> Any:
    return (
        select(func.max(_UC.period_end_at))
        .where(_UC.tenant_id == bindparam("tenant"), _UC.mode == bindparam("mode"))
        .where(_UC.customer_id == customer_id)
        .scalar_subquery()
    )


def _resolver(key: Any, customer_id: Any, table: Any) -> Any:
    return select(key, customer_id, _closed_until_of(customer_id)).where(
        table.c.tenant_id == bindparam("tenant"),
        table.c.mode == bindparam("mode"),
        key.in_(bindparam("refs", expanding=True)),
    )


_BY_EXTERNAL_ID = _resolver(_CU.external_id, _CU.id, CustomerRow.__table__)
_BY_SUBSCRIPTION = _resolver(_SU.id, _SU.customer_id, SubscriptionRow.__table__)


def _resolve(
    session: Session,
    scope: TenantScope,
    statement: Any,
    refs: set[str],
    closed: dict[str, tuple[int, datetime]],
) -> dict[str, str]:
    """Each known reference's customer id; each customer's last invoiced period end (as its
    hour number and instant) into `closed`."""
    found: dict[str, str] = {}
    ordered = sorted(refs)
    connection = session.connection()
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        params = {"tenant": scope.tenant_id, "mode": scope.mode, "refs": chunk}
        for ref, customer_id, end_at in connection.execute(statement, params):
            found[str(ref)] = str(customer_id)
            if end_at is not None:
                end = _instant(end_at)
                closed[str(customer_id)] = (event_store.hour_number(end), end)
    return found


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


def _instant(value: Any) -> datetime:
    """`max()` over a UtcDateTime loses the column type on SQLite: read it back here."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value
